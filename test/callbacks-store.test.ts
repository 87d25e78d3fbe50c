/** The callback outbox's SQL on a real database file: claims, leases, outcomes, the debug reads, the purge. */
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, type SqliteDatabase } from '../src/store/database.js';
import {
  ABANDONED_RETENTION_MS,
  CallbackReads,
  CallbackWrites,
  DELIVERED_RETENTION_MS,
  type CallbackEnqueue,
} from '../src/store/callbacks.js';
import { tempDir } from './helpers/tmp.js';

const T0 = 1_700_000_000_000;
const TTL = 120_000;

let tmp: { dir: string; cleanup: () => void };
let db: SqliteDatabase;
let writes: CallbackWrites;
let reads: CallbackReads;

beforeEach(() => {
  tmp = tempDir('sydent-ts-outbox-');
  db = openDatabase(path.join(tmp.dir, 'sydent.db'));
  writes = new CallbackWrites(db);
  reads = new CallbackReads(db);
});
afterEach(() => {
  db.close();
  tmp.cleanup();
});

const cb = (destination: string, now = T0, address = 'a@example.com'): CallbackEnqueue => ({
  destination,
  path: '/_matrix/federation/v1/3pid/onbind',
  body: { mxid: `@a:${destination}`, address },
  medium: 'email',
  address,
  now,
});
const claim = (now: number, limit = 10, excludeDestinations: string[] = []) =>
  writes.claim({ now, claimedUntil: now + TTL, limit, excludeDestinations });

describe('callback outbox', () => {
  it('a claim takes due rows once, one per destination, and skips busy destinations', () => {
    const a1 = writes.enqueue(cb('a.test'));
    const a2 = writes.enqueue(cb('a.test'));
    const b1 = writes.enqueue(cb('b.test'));
    writes.enqueue(cb('c.test', T0 + 1000)); // not due yet

    const first = claim(T0);
    expect(first.map((r) => r.id)).toEqual([a1, b1]);
    expect(first[0]).toMatchObject({ destination: 'a.test', attempts: 0, claimedUntil: T0 + TTL, nextAttemptTs: T0 });
    expect(JSON.parse(first[0]!.body)).toEqual(cb('a.test').body);
    // the claimed rows are nobody else's; a.test is busy for this worker
    expect(claim(T0, 10, ['a.test'])).toEqual([]);
    expect(claim(T0).map((r) => r.id)).toEqual([a2]);
    expect(reads.counts()).toMatchObject({ pending: 1, delivering: 3 });
  });

  it('respects the limit', () => {
    for (const d of ['a.test', 'b.test', 'c.test']) writes.enqueue(cb(d));
    expect(claim(T0, 2)).toHaveLength(2);
    expect(claim(T0, 0)).toEqual([]);
    expect(claim(T0, 5)).toHaveLength(1);
  });

  it('a lapsed claim is taken over, and the old claimant can no longer write', () => {
    const id = writes.enqueue(cb('a.test'));
    const [mine] = claim(T0);
    expect(claim(T0 + TTL)).toEqual([]);
    const [theirs] = claim(T0 + TTL + 1);
    expect(theirs?.id).toBe(id);
    expect(writes.retry(id, mine!.claimedUntil, T0 + 5000, 'HTTP 500')).toBe(false);
    expect(writes.release(id, mine!.claimedUntil)).toBe(false);
    expect(writes.abandon(id, mine!.claimedUntil, 'x')).toBe(false);
    expect(writes.retry(id, theirs!.claimedUntil, T0 + 5000, 'HTTP 500')).toBe(true);
    expect(reads.byId(id)).toMatchObject({
      state: 'retrying',
      attempts: 1,
      nextAttemptTs: T0 + 5000,
      lastError: 'HTTP 500',
      claimedUntil: null,
    });
  });

  it('a retrying row is due at its next attempt; a released one at once and untouched', () => {
    const id = writes.enqueue(cb('a.test'));
    const [c] = claim(T0);
    writes.retry(id, c!.claimedUntil, T0 + 1000, 'HTTP 502');
    expect(claim(T0 + 999)).toEqual([]);
    expect(reads.nextDue([])).toBe(T0 + 1000);
    expect(reads.nextDue(['a.test'])).toBeNull();
    const [again] = claim(T0 + 1000);
    expect(again).toMatchObject({ id, attempts: 1, lastError: 'HTTP 502' });
    expect(writes.release(id, again!.claimedUntil)).toBe(true);
    expect(reads.byId(id)).toMatchObject({ state: 'retrying', attempts: 1, claimedUntil: null });

    const fresh = writes.enqueue(cb('b.test'));
    const [f] = claim(T0, 10, ['a.test']);
    writes.release(fresh, f!.claimedUntil);
    expect(reads.byId(fresh)).toMatchObject({ state: 'pending', attempts: 0 });
  });

  it('a destination’s rows go in due order: past a row another worker holds, and a lapsed claim before newer rows', () => {
    const first = writes.enqueue(cb('a.test', T0));
    const second = writes.enqueue(cb('a.test', T0 + 10));
    const third = writes.enqueue(cb('a.test', T0 + 20));
    const later = writes.enqueue(cb('a.test', T0 + 10 * TTL));
    const other = writes.enqueue(cb('b.test', T0 + 15));
    // Another worker holds the first row; this one, not busy with a.test, takes the next one, then b.test's.
    expect(claim(T0).map((r) => r.id)).toEqual([first]);
    expect(claim(T0 + 30).map((r) => r.id)).toEqual([second, other]);
    // The first claim lapses: that row, the most overdue, goes before the third.
    expect(claim(T0 + TTL + 1, 10, ['b.test']).map((r) => r.id)).toEqual([first]);
    expect(claim(T0 + TTL + 2, 10, ['b.test']).map((r) => r.id)).toEqual([third]);
    // Only the row not yet due is left waiting: the next due time is the end of the earliest lease.
    expect(claim(T0 + TTL + 3, 10, ['b.test'])).toEqual([]);
    expect(reads.nextDue(['b.test'])).toBe(T0 + 30 + TTL);
    // A failed attempt due again before any lease ends is what comes next, and is taken when due.
    expect(writes.retry(second, T0 + 30 + TTL, T0 + TTL + 4000, 'HTTP 502')).toBe(true);
    expect(reads.nextDue(['b.test'])).toBe(T0 + TTL + 4000);
    expect(claim(T0 + TTL + 3999, 10, ['b.test'])).toEqual([]);
    expect(claim(T0 + TTL + 4000, 10, ['b.test']).map((r) => r.id)).toEqual([second]);
    // The row claimed at TTL + 1 lapses again: still the most overdue of a.test's rows.
    expect(claim(T0 + 2 * TTL + 2, 10, ['b.test']).map((r) => r.id)).toEqual([first]);
    expect(claim(T0 + 10 * TTL, 10, ['b.test']).map((r) => r.id)).toEqual([first]);
    expect(reads.byId(later)).toMatchObject({ state: 'pending' });
  });

  it('a backlog for a busy destination leaves the others’ rows and due times as they are', () => {
    const dead = [...Array(300).keys()].map((i) => writes.enqueue(cb('dead.test', T0 + i)));
    const live = writes.enqueue(cb('live.test', T0 + 250));
    const waiting = writes.enqueue(cb('waiting.test', T0 + 10_000));
    expect(claim(T0 + 400, 10, ['dead.test']).map((r) => r.id)).toEqual([live]);
    expect(reads.nextDue(['dead.test'])).toBe(T0 + 10_000);
    expect(reads.nextDue(['dead.test', 'waiting.test'])).toBe(T0 + 400 + TTL);
    expect(reads.nextDue([])).toBe(T0);
    expect(claim(T0 + 400, 10, ['live.test']).map((r) => r.id)).toEqual([dead[0]]);
    expect(claim(T0 + 10_000, 10).map((r) => r.id)).toEqual([dead[1], waiting]);
  });

  it('nextDue counts a claimed row from the end of its lease', () => {
    writes.enqueue(cb('a.test'));
    claim(T0);
    expect(reads.nextDue([])).toBe(T0 + TTL);
  });

  it('delivered deletes the 3PID’s invite tokens in the same transaction when asked, and wins over any claim', () => {
    const insert = db.prepare(
      'INSERT INTO invite_tokens (medium, address, room_id, sender, token) VALUES (?, ?, ?, ?, ?)',
    );
    insert.run('email', 'a@example.com', '!r:x', '@s:x', 't1');
    insert.run('email', 'b@example.com', '!r:x', '@s:x', 't2');
    const keep = writes.enqueue(cb('a.test', T0, 'b@example.com'));
    const id = writes.enqueue(cb('a.test'));
    claim(T0);
    expect(writes.delivered(keep, T0 + 5, false)).toEqual({ updated: true, tokensDeleted: 0 });
    expect(writes.delivered(id, T0 + 5, true)).toEqual({ updated: true, tokensDeleted: 1 });
    expect(writes.delivered(id, T0 + 6, true)).toEqual({ updated: false, tokensDeleted: 0 });
    expect(db.prepare('SELECT token FROM invite_tokens').all()).toEqual([{ token: 't2' }]);
    expect(reads.byId(id)).toMatchObject({ state: 'delivered', deliveredTs: T0 + 5, claimedUntil: null });
    expect(claim(T0 + 10 * TTL)).toEqual([]);
    expect(reads.pendingCount()).toBe(0);
  });

  it('the debug rows carry no body and no 3PID, undelivered first', () => {
    const done = writes.enqueue(cb('a.test'));
    const waiting = writes.enqueue(cb('b.test'));
    const [c] = claim(T0, 1);
    writes.delivered(c!.id, T0, true);
    const rows = reads.list();
    expect(rows.map((r) => r.id)).toEqual([waiting, done]);
    expect(Object.keys(rows[0]!).sort()).toEqual(
      [
        'attempts',
        'claimedUntil',
        'createdTs',
        'deliveredTs',
        'destination',
        'id',
        'lastError',
        'nextAttemptTs',
        'state',
      ].sort(),
    );
    expect(JSON.stringify(rows)).not.toContain('example.com');
  });

  it('purges delivered rows after a day and abandoned ones after a week', () => {
    const delivered = writes.enqueue(cb('a.test'));
    const abandoned = writes.enqueue(cb('no server'));
    const waiting = writes.enqueue(cb('c.test'));
    for (const c of claim(T0)) {
      if (c.id === delivered) writes.delivered(c.id, T0, true);
      if (c.id === abandoned) writes.abandon(c.id, c.claimedUntil, 'not a valid Matrix server name');
      if (c.id === waiting) writes.retry(c.id, c.claimedUntil, T0 + 1000, 'HTTP 500');
    }
    expect(writes.purge(T0 + DELIVERED_RETENTION_MS)).toBe(0);
    expect(writes.purge(T0 + DELIVERED_RETENTION_MS + 1)).toBe(1);
    expect(reads.byId(delivered)).toBeUndefined();
    expect(writes.purge(T0 + ABANDONED_RETENTION_MS + 1)).toBe(1);
    expect(reads.byId(abandoned)).toBeUndefined();
    // never an undelivered one, however old
    expect(writes.purge(T0 + 100 * ABANDONED_RETENTION_MS)).toBe(0);
    expect(reads.byId(waiting)?.state).toBe('retrying');
  });
});
