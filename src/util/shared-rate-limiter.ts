/**
 * A rate limit whose buckets live in the store, so that it holds across every node on one database (PostgreSQL):
 * each take is one atomic statement there (src/store/pg/rate-buckets.ts). SQLite deployments are one node and
 * keep their buckets in memory (RateLimiter); `rateLimiter()` picks the one the engine needs.
 */
import type { Clock } from '../clock.js';
import type { DbEngineName } from '../config/types.js';
import { RateLimiter, type Admission, type BucketLimits, type Limiter } from './rate-limiter.js';

/** The store's two bucket operations (the store supervisor's facade). */
export interface BucketStore {
  takeRateToken(e: { bucket: string; key: string; burst: number; rateHz: number; now: number }): Promise<Admission>;
  refundRateToken(e: { bucket: string; key: string; burst: number }): Promise<void>;
}

export class SharedRateLimiter implements Limiter {
  constructor(
    /** the limit's name: keys of different limits never share a bucket */
    private readonly bucket: string,
    private readonly limits: BucketLimits,
    private readonly clock: Clock,
    private readonly store: BucketStore,
  ) {}

  take(key: string): Promise<Admission> {
    return this.store.takeRateToken({ bucket: this.bucket, key, ...this.limits, now: this.clock.now() });
  }

  refund(key: string): Promise<void> {
    return this.store.refundRateToken({ bucket: this.bucket, key, burst: this.limits.burst });
  }
}

/** In memory on SQLite (one node); in the shared database on PostgreSQL (any number of nodes). */
export function rateLimiter(
  engine: DbEngineName,
  bucket: string,
  limits: BucketLimits,
  clock: Clock,
  store: () => BucketStore,
): Limiter {
  return engine === 'postgresql'
    ? new SharedRateLimiter(bucket, limits, clock, store())
    : new RateLimiter(limits.burst, limits.rateHz, clock);
}
