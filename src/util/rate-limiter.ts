/**
 * A token bucket per key: `burst` requests at once, refilled at `rateHz` per second. Refill is computed from
 * the clock when a key is touched (no global tick as in Sydent), so the answer can say exactly how long to wait.
 */
import type { Clock } from '../clock.js';

export type Admission = { ok: true } | { ok: false; retryAfterMs: number };

/** A rate limit as its users see it: kept in memory (one node) or in the database the nodes share (src/util/shared-rate-limiter.ts). */
export interface Limiter {
  take(key: string): Admission | Promise<Admission>;
  refund(key: string): void | Promise<void>;
}

/** One bucket's limits: `burst` at once, refilled at `rateHz` per second. */
export interface BucketLimits {
  burst: number;
  rateHz: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter implements Limiter {
  private readonly buckets = new Map<string, Bucket>();
  private lastPrune = 0;

  constructor(
    private readonly burst: number,
    private readonly rateHz: number,
    private readonly clock: Clock,
  ) {}

  /** Takes one token for `key` if there is one (`now` from this limiter's clock unless given). */
  take(key: string, now: number = this.clock.now()): Admission {
    this.prune(now);
    const bucket = this.refill(key, now);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { ok: true };
    }
    return { ok: false, retryAfterMs: Math.ceil(((1 - bucket.tokens) / this.rateHz) * 1000) };
  }

  /** Gives back a token taken for `key`: the request it admitted turned out not to count (a right submitToken). */
  refund(key: string): void {
    const bucket = this.buckets.get(key);
    if (bucket) bucket.tokens = Math.min(this.burst, bucket.tokens + 1);
  }

  private refill(key: string, now: number): Bucket {
    const bucket = this.buckets.get(key) ?? { tokens: this.burst, at: now };
    bucket.tokens = Math.min(this.burst, bucket.tokens + (Math.max(0, now - bucket.at) / 1000) * this.rateHz);
    bucket.at = now;
    this.buckets.set(key, bucket);
    return bucket;
  }

  /** Forgets buckets that have filled up again, so memory follows the active keys only. */
  private prune(now: number): void {
    const fullAfterMs = (this.burst / this.rateHz) * 1000;
    if (now - this.lastPrune < Math.min(fullAfterMs, 60_000)) return;
    this.lastPrune = now;
    for (const [key, bucket] of this.buckets) {
      if (now - bucket.at >= fullAfterMs) this.buckets.delete(key);
    }
  }
}
