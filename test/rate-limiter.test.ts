import { describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { RateLimiter } from '../src/util/rate-limiter.js';

describe('RateLimiter', () => {
  it('admits a burst, then refuses with the time until the next token', () => {
    const clock = new ManualClock(0);
    const limiter = new RateLimiter(3, 1 / 300, clock);
    for (let i = 0; i < 3; i++) expect(limiter.take('a')).toEqual({ ok: true });
    expect(limiter.take('a')).toEqual({ ok: false, retryAfterMs: 300_000 });
    clock.advance(100_000);
    expect(limiter.take('a')).toEqual({ ok: false, retryAfterMs: 200_000 });
    clock.advance(200_000);
    expect(limiter.take('a')).toEqual({ ok: true });
  });

  it('a refund gives one token back, never more than the burst', () => {
    const clock = new ManualClock(0);
    const limiter = new RateLimiter(2, 1 / 60, clock);
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(false);
    limiter.refund('a');
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(false);
    limiter.refund('a');
    limiter.refund('a');
    limiter.refund('a');
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(false);
  });

  it('keeps keys apart and forgets full buckets', () => {
    const clock = new ManualClock(0);
    const limiter = new RateLimiter(1, 1, clock);
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('b').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(false);
    clock.advance(10_000);
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(false);
  });
});
