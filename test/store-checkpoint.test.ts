/**
 * WAL checkpoints happen off the event loop: a commit that leaves thousands of pages in the WAL (a replication push)
 * is answered before any of them is copied into the database file, and a thread of the store copies them soon after.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';

import { SqliteStore } from '../src/store/sqlite-store.js';
import { tempDir } from './helpers/tmp.js';

const log = pino({ level: 'silent' });
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** about a page each: 2,000 rows leave twice SQLite's checkpoint threshold in the WAL */
const ROWS = 2_000;
const signed = (i: number) => JSON.stringify({ address: `a${i}@example.test`, pad: 'x'.repeat(3000) });

async function until(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

it('answers a large commit before checkpointing it, and a thread copies the WAL into the database file soon after', async () => {
  const tmp = tempDir('sydent-ts-checkpoint-');
  cleanups.push(tmp.cleanup);
  const file = path.join(tmp.dir, 'sydent.db');
  const store = SqliteStore.open(file, { log });
  cleanups.push(() => store.close());
  const pepper = await store.reads.associations.storedPepper();
  const before = fs.statSync(file).size;

  const associations = Array.from({ length: ROWS }, (_, i) => ({
    originId: i + 1,
    medium: 'email',
    address: `a${i}@example.test`,
    mxid: `@a${i}:origin.test`,
    ts: 1,
    notBefore: 0,
    notAfter: 9_999_999_999_999,
    sgAssoc: signed(i),
    lookupHash: `hash-${i}`,
  }));
  const result = await store.writes.applyPush(
    { originServer: 'origin.test', associations, pepperSeen: pepper },
    { deadline: Date.now() + 30_000 },
  );
  expect(result.inserted).toBe(ROWS);
  // committed (in the WAL), not yet copied: the commit did not wait for the checkpoint
  expect(fs.statSync(file).size).toBe(before);
  expect(fs.statSync(`${file}-wal`).size).toBeGreaterThan(ROWS * 4096);

  await until('the checkpoint', () => fs.statSync(file).size > before + ROWS * 3000, 20_000);
  // another connection reads every row, whichever of the two files holds it
  const other = new Database(file, { readonly: true });
  cleanups.push(() => other.close());
  expect(other.prepare('SELECT count(*) AS n FROM global_threepid_associations').get()).toEqual({ n: ROWS });
});
