/**
 * An idle store gives its SQLite memory back: the pages a burst of reads mapped into the process (SQLite's mmap of
 * sydent.db) are unmapped once the store has seen no read and no write for its idle time, and reads still answer,
 * mapping the file again.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';

import { lookupHash } from '../src/crypto/index.js';
import { closeDatabase, openDatabase } from '../src/store/database.js';
import { SqliteStore } from '../src/store/sqlite-store.js';
import { tempDir } from './helpers/tmp.js';

const log = pino({ level: 'silent' });
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const ROWS = 5_000;
const IDLE_MS = 200;
const addressOf = (i: number) => `a${i}@example.test`;

/** KiB of this process's memory mapped from `file` and resident (Rss of its mappings in /proc/self/smaps). */
function residentKiB(file: string): number {
  let kib = 0;
  let inFile = false;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const mapping = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (mapping) inFile = mapping[1] === file;
    else if (inFile) kib += Number(/^Rss:\s+(\d+) kB/.exec(line)?.[1] ?? 0);
  }
  return kib;
}

async function until(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const blob = 'x'.repeat(3000);

/** A new sydent.db of ROWS associations, about 20 MB, a row a page (their hashes made when a store opens it). */
function databaseOfAssociations(): string {
  const tmp = tempDir('sydent-ts-idle-release-');
  cleanups.push(tmp.cleanup);
  const file = path.join(tmp.dir, 'sydent.db');
  const db = openDatabase(file);
  const insert = db.prepare(
    `INSERT INTO global_threepid_associations
       (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
     VALUES ('email', ?, ?, 1, 0, 9999999999999, 'origin.test', ?, ?)`,
  );
  db.transaction(() => {
    for (let i = 0; i < ROWS; i++) insert.run(addressOf(i), `@u${i}:example.test`, i, blob);
  })();
  closeDatabase(db);
  return file;
}

it('unmaps the database pages a burst of lookups mapped once the store is idle, and lookups still answer', async () => {
  const file = databaseOfAssociations();

  const store = SqliteStore.open(file, { log, idleReleaseMs: IDLE_MS });
  cleanups.push(() => store.close());
  // every row, its signed association with it: the table's pages are read through the mmap
  for (let i = 0; i < ROWS; i++) {
    const row = await store.reads.associations.lookup('email', addressOf(i), Date.now());
    expect(row?.mxid).toBe(`@u${i}:example.test`);
  }
  const mapped = residentKiB(file);
  expect(mapped).toBeGreaterThan(10_000);

  await until('the mapped pages to be released', () => residentKiB(file) === 0, 20 * IDLE_MS);

  // the store still reads: the file is mapped again
  const again = await store.reads.associations.lookup('email', addressOf(42), Date.now());
  expect(again).toEqual({ mxid: '@u42:example.test', sgAssoc: blob, ts: 1 });
  expect(residentKiB(file)).toBeGreaterThan(0);
}, 60_000);

it('keeps the mapping while reads go on', async () => {
  const tmp = tempDir('sydent-ts-idle-release-');
  cleanups.push(tmp.cleanup);
  const file = path.join(tmp.dir, 'sydent.db');
  closeDatabase(openDatabase(file));
  const store = SqliteStore.open(file, { log, idleReleaseMs: IDLE_MS });
  cleanups.push(() => store.close());
  // reads every 20 ms (each a new read snapshot) for 8 idle times: never idle, never released
  const until = Date.now() + 8 * IDLE_MS;
  while (Date.now() < until) {
    await store.reads.associations.lookup('email', addressOf(1), Date.now());
    expect(residentKiB(file)).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 20));
  }
});

it('ends the lookup workers of a burst of large hash lookups once the store is idle, and large lookups still answer', async () => {
  const file = databaseOfAssociations();

  // opening gives the database its pepper and the rows their hashes
  const store = SqliteStore.open(file, { log, idleReleaseMs: IDLE_MS });
  cleanups.push(() => store.close());
  const pepper = await store.reads.associations.pepper();
  const hashes = Array.from({ length: ROWS }, (_, i) => lookupHash(addressOf(i), 'email', pepper));
  // The first large lookup starts the workers; those after it, once they are ready, hand them slices, which they
  // read through mappings of their own. Lookups go on (the store is never idle) until the workers have mapped pages
  // beyond what the read connection maps.
  const mappings = async (): Promise<Record<string, string>> =>
    JSON.parse((await store.reads.associations.mappingsJson(hashes, Date.now())).toString()) as Record<string, string>;
  let found = await mappings();
  expect(Object.keys(found)).toHaveLength(ROWS);
  const alone = residentKiB(file);
  await until(
    'the lookup workers to map the file',
    () => {
      void store.reads.associations.mappingsJson(hashes, Date.now());
      return residentKiB(file) > alone;
    },
    10_000,
  );

  // idle: the read connection's mapping and the workers' are all given back
  await until('every mapping of the file to be released', () => residentKiB(file) === 0, 20 * IDLE_MS);

  found = await mappings();
  expect(Object.keys(found)).toHaveLength(ROWS);
  expect(found[hashes[42]!]).toBe('@u42:example.test');
}, 60_000);
