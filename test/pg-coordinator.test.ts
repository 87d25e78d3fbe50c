/**
 * The request locks of several nodes on one PostgreSQL database (src/store/pg/coordinator.ts), on a real database:
 * a lock one node holds is refused to another until it is given back; the takes and gives asked for at once go
 * together in a few messages on the node's one coordinating connection; a connection lost takes its locks with it.
 */
import pg from 'pg';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';

import { PgCoordinator } from '../src/store/pg/coordinator.js';
import type { Cleanups } from './helpers/cleanups.js';
import { connect, testDatabase } from './helpers/postgres.js';

const cleanups: Cleanups = [];
afterAll(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

let url: string;
let admin: pg.Client;

beforeAll(async () => {
  const db = await testDatabase();
  cleanups.push(db.drop);
  url = db.url;
  admin = await connect(url);
  cleanups.push(() => admin.end());
});

function node(name: string): PgCoordinator {
  const c = new PgCoordinator(url, name, pino({ level: 'silent' }), () => undefined);
  c.start();
  cleanups.push(() => c.close());
  return c;
}

/** The advisory locks held now, by the application name of the session holding them. */
async function locksByNode(): Promise<Record<string, number>> {
  const { rows } = await admin.query<{ app: string; n: number }>(
    `SELECT a.application_name AS app, count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
     WHERE l.locktype = 'advisory' AND l.granted GROUP BY a.application_name`,
  );
  return Object.fromEntries(rows.map((r) => [r.app, r.n]));
}

/** The statements sent on the coordinating connections that take or give back request locks, while `work` runs. */
async function lockStatementsDuring(work: () => Promise<unknown>): Promise<number> {
  const query = vi.spyOn(pg.Client.prototype, 'query');
  try {
    await work();
    return query.mock.calls.filter(([q]) => typeof q === 'string' && /pg_(try_advisory_lock|advisory_unlock)/.test(q))
      .length;
  } finally {
    query.mockRestore();
  }
}

const keys = Array.from({ length: 100 }, (_, i) => `email\0someone${i}@example.org\0secret${i}`);

it('a lock one node holds is refused to the other until given back; 100 takes and gives at once go in a few messages', async () => {
  const a = node('A');
  const b = node('B');
  const soon = () => Date.now() + 5_000;

  let held: boolean[] = [];
  const takes = await lockStatementsDuring(async () => {
    held = await Promise.all(keys.map((k) => a.holdKey(k, soon())));
  });
  expect(held).toEqual(keys.map(() => true));
  expect(takes).toBeLessThanOrEqual(3);
  expect(await locksByNode()).toEqual({ 'sydent-ts A': 100 });

  // B polls until its deadline, and gets none of them.
  const refused = await Promise.all(keys.slice(0, 10).map((k) => b.holdKey(k, Date.now() + 100)));
  expect(refused).toEqual(keys.slice(0, 10).map(() => false));

  // Half given back by A while B asks for them: B gets each once A has let it go.
  let taken: boolean[] = [];
  const handover = await lockStatementsDuring(async () => {
    [taken] = await Promise.all([
      Promise.all(keys.slice(0, 50).map((k) => b.holdKey(k, soon()))),
      Promise.all(keys.slice(0, 50).map((k) => a.releaseKey(k))),
    ]);
  });
  expect(taken).toEqual(keys.slice(0, 50).map(() => true));
  expect(await locksByNode()).toEqual({ 'sydent-ts A': 50, 'sydent-ts B': 50 });
  // B's first takes fail while A still holds them, and B asks again after 10 ms: a few rounds, not 150 statements.
  expect(handover).toBeLessThan(30);

  // A lock given back and taken again by the same node in one turn is held once, by that node.
  await Promise.all([b.releaseKey(keys[0]!), b.holdKey(keys[0]!, soon())]);
  expect(await locksByNode()).toEqual({ 'sydent-ts A': 50, 'sydent-ts B': 50 });

  await Promise.all(keys.map((k) => Promise.all([a.releaseKey(k), b.releaseKey(k)])));
  expect(await locksByNode()).toEqual({});
});

it("a node's connection lost: its locks go with it, and the other node takes them", async () => {
  const a = node('C');
  const b = node('D');
  const own = keys.slice(0, 5).map((k) => `lost\0${k}`);
  expect(await Promise.all(own.map((k) => a.holdKey(k, Date.now() + 5_000)))).toEqual([true, true, true, true, true]);
  await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sydent-ts C'`);
  expect(await Promise.all(own.map((k) => b.holdKey(k, Date.now() + 5_000)))).toEqual([true, true, true, true, true]);
  // A's release of a lock it lost is a no-op, and takes nothing from D.
  await Promise.all(own.map((k) => a.releaseKey(k)));
  const locks = await locksByNode();
  expect(locks['sydent-ts D']).toBe(5);
  expect(locks).not.toHaveProperty('sydent-ts C');
});
