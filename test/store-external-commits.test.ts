/**
 * Commits another process makes to a running server's sydent.db (`sydent-ts peers add`, an operator's sqlite3) are
 * told to the store's listeners within about a second (SqliteStore.onSignal), so the replication worker reloads its
 * peers and the notifier looks at its outbox then, not at their next tick; the store's own commits are not told.
 */
import Database from 'better-sqlite3';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, expect, it } from 'vitest';

import type { StoreSignal } from '../src/store/engine.js';
import { SqliteStore } from '../src/store/sqlite-store.js';
import { tempDir } from './helpers/tmp.js';

const log = pino({ level: 'silent' });
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** the store's poll, shortened from its second */
const POLL_MS = 100;

function openStore(): { store: SqliteStore; file: string; heard: StoreSignal[] } {
  const tmp = tempDir('sydent-ts-external-');
  cleanups.push(tmp.cleanup);
  const file = path.join(tmp.dir, 'sydent.db');
  const store = SqliteStore.open(file, { log, externalCommitsPollMs: POLL_MS });
  cleanups.push(() => store.close());
  const heard: StoreSignal[] = [];
  store.onSignal((signal) => heard.push(signal));
  return { store, file, heard };
}

it("another connection's commit is told as every signal at the next poll; the store's own commits are not", async () => {
  const { store, file, heard } = openStore();
  const request = () => ({ deadline: Date.now() + 5000 });

  // our own writes, then two polls: nothing told
  await store.writes.registerAccount({ userId: '@a:hs.test', token: 'tok-a', now: Date.now() }, request());
  await store.writes.markPeerSent({ name: 'nobody.test', lastId: 1, now: Date.now() }, request());
  await sleep(2 * POLL_MS + 200);
  expect(heard).toEqual([]);

  // what `peers add` does from its own process: a row committed on another connection
  const other = new Database(file);
  cleanups.push(() => other.close());
  other.prepare("INSERT INTO peers (name, port, lastSentVersion, active) VALUES ('new.test', NULL, 0, 1)").run();
  // a poll comes every POLL_MS; a loaded machine may run it late
  const deadline = Date.now() + 5000;
  while (heard.length === 0 && Date.now() < deadline) await sleep(50);
  expect(heard.sort()).toEqual(['callbacks', 'log']);

  // told once per change, not again while nothing else commits
  await sleep(2 * POLL_MS);
  expect(heard).toHaveLength(2);
});

it('a closed store polls no more', async () => {
  const { store, file, heard } = openStore();
  await store.close();
  const other = new Database(file);
  cleanups.push(() => other.close());
  other.prepare("INSERT INTO peers (name, port, lastSentVersion, active) VALUES ('late.test', NULL, 0, 1)").run();
  await sleep(2 * POLL_MS);
  expect(heard).toEqual([]);
});
