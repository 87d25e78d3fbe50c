/**
 * The notifier's outbox on a real SQLite file: the wakes of one turn of the event loop (binds answered by one group
 * commit) lead to one claim, which takes every row that is ready.
 */
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { CallbackWorker } from '../src/notifier/worker.js';
import { CallbackReads, CallbackWrites, type ClaimedCallback, type ClaimRequest } from '../src/store/callbacks.js';
import { closeDatabase, openDatabase } from '../src/store/database.js';
import { tempDir } from './helpers/tmp.js';

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup(
  opts: { claimTtlMs?: number; deliver?: (row: ClaimedCallback, signal: AbortSignal) => Promise<number> } = {},
) {
  const tmp = tempDir('sydent-ts-notifier-claims-');
  const db = openDatabase(path.join(tmp.dir, 'sydent.db'));
  const writes = new CallbackWrites(db);
  const reads = new CallbackReads(db);
  const claims: ClaimedCallback[][] = [];
  const delivering: ClaimedCallback[] = [];
  let release: () => void = () => undefined;
  const held = new Promise<void>((resolve) => (release = resolve));
  const worker = new CallbackWorker({
    store: {
      claim: async (req: ClaimRequest) => {
        const rows = writes.claim(req);
        claims.push(rows);
        return rows;
      },
      delivered: async (id, now, del) => writes.delivered(id, now, del),
      retry: async (id, until, next, err) => writes.retry(id, until, next, err),
      abandon: async (id, until, err) => writes.abandon(id, until, err),
      release: async (id, until) => writes.release(id, until),
      purge: async (now) => writes.purge(now),
    },
    reads,
    // Every homeserver answers once the test lets it: until then, each delivery is in flight.
    deliver: async (row, signal) => {
      delivering.push(row);
      if (opts.deliver) return opts.deliver(row, signal);
      await held;
      return 200;
    },
    ...(opts.claimTtlMs ? { claimTtlMs: opts.claimTtlMs } : {}),
    now: () => Date.now(),
    log: pino({ level: 'silent' }),
    deleteInviteTokens: false,
  });
  cleanups.push(
    () => tmp.cleanup(),
    () => closeDatabase(db),
    async () => {
      release();
      await worker.drain();
    },
  );
  const enqueue = (destination: string) =>
    writes.enqueue({
      destination,
      path: '/_matrix/federation/v1/3pid/onbind',
      body: {},
      medium: 'email',
      address: `${destination}@example.org`,
      now: Date.now(),
    });
  return { worker, enqueue, claims, delivering, reads, release: () => release() };
}

describe('the notifier outbox', () => {
  it('five binds woken in one turn: one claim takes all five rows', async () => {
    const { worker, enqueue, claims, delivering } = setup();
    for (const hs of ['a.example', 'b.example', 'c.example', 'd.example', 'e.example']) {
      enqueue(hs);
      worker.wake();
    }
    await vi.waitFor(() => expect(delivering).toHaveLength(5));
    // the turns after: no other claim follows while nothing changed
    await new Promise((r) => setTimeout(r, 50));
    expect(claims.map((rows) => rows.length)).toEqual([5]);
  });

  it('binds for a homeserver being delivered to lead to no claim; their rows go once that delivery ends', async () => {
    const { worker, enqueue, claims, delivering, release } = setup();
    const first = enqueue('busy.example');
    worker.wake('busy.example');
    await vi.waitFor(() => expect(delivering.map((r) => r.id)).toEqual([first]));
    const waiting: number[] = [];
    for (let i = 0; i < 5; i++) {
      waiting.push(enqueue('busy.example'));
      worker.wake('busy.example');
      await new Promise((r) => setImmediate(r));
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(claims.map((rows) => rows.map((r) => r.id))).toEqual([[first]]);
    // A row for another homeserver is claimed at once, beside the delivery in flight.
    const other = enqueue('other.example');
    worker.wake('other.example');
    await vi.waitFor(() => expect(delivering.map((r) => r.id)).toEqual([first, other]));
    release();
    // Each delivery's end takes busy.example's next row, one at a time, in order.
    await vi.waitFor(() => expect(delivering.map((r) => r.id)).toEqual([first, other, ...waiting]));
  });

  it('a delivery still unanswered when its claim runs out is cut off, and the row is left for a later claim', async () => {
    const aborted: number[] = [];
    const { worker, enqueue, reads } = setup({
      claimTtlMs: 300,
      // A homeserver that never answers: the request ends only when its signal says so.
      deliver: (row, signal) =>
        new Promise((_, reject) =>
          signal.addEventListener('abort', () => {
            aborted.push(row.id);
            reject(new Error('aborted'));
          }),
        ),
    });
    const id = enqueue('slow.example');
    worker.wake();
    await vi.waitFor(() => expect(aborted).toEqual([id]), { timeout: 5_000 });
    await vi.waitFor(() => {
      expect(reads.byId(id)).toMatchObject({ state: 'retrying', attempts: 1 });
    });
  });
});
