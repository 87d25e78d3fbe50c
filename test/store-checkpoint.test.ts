/**
 * WAL checkpoints happen off the event loop: a commit that leaves thousands of pages in the WAL (a replication push)
 * is answered before any of them is copied into the database file, and a thread of the store copies them soon after.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';

import { Checkpointer, RESTART_BACKOFF_MS, type CheckpointMode } from '../src/store/checkpointer.js';
import { openDatabase } from '../src/store/database.js';
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

describe('checkpoints beside a reader from outside (a backup, the sqlite3 shell)', () => {
  /** A database of our schema, its write connection checkpointed by a Checkpointer as the store's is. */
  function setup(opts: { restartFrames?: number; now?: () => number } = {}) {
    const tmp = tempDir('sydent-ts-checkpoint-reader-');
    cleanups.push(tmp.cleanup);
    const file = path.join(tmp.dir, 'sydent.db');
    const db = openDatabase(file);
    db.pragma('busy_timeout = 0');
    const seen: { mode: CheckpointMode; busy: number; log: number; checkpointed: number }[] = [];
    const checkpointer = new Checkpointer(db, file, {
      ...opts,
      onCheckpoint: (mode, r) => seen.push({ mode, ...r }),
      onFallback: (reason) => {
        throw new Error(`fell back: ${reason}`);
      },
    });
    cleanups.push(async () => {
      await checkpointer.close();
      db.close();
    });
    const insert = db.prepare(
      "INSERT INTO global_threepid_associations (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc) VALUES ('email', ?, '@a:x.test', 1, 0, 1, 'x.test', ?, ?)",
    );
    let n = 0;
    /** one commit of `rows` rows of about a page each, then what the store does after a commit */
    const commit = (rows: number) => {
      db.transaction(() => {
        for (let i = 0; i < rows; i++, n++) insert.run(`a${n}@example.test`, n, signed(n));
      })();
      checkpointer.committed();
    };
    // Another process's connection trying to write without waiting: what a write of ours meets if a checkpoint holds
    // the write lock.
    const probe = new Database(file);
    probe.pragma('busy_timeout = 0');
    cleanups.push(() => probe.close());
    let lockedOut = 0;
    /** tries the write lock until the checkpoint asked for has answered */
    const probeUntilAnswered = async (answers: number) => {
      await until(
        'the checkpoint',
        () => {
          try {
            probe.exec('BEGIN IMMEDIATE');
            probe.exec('ROLLBACK');
          } catch (error) {
            if ((error as { code?: string }).code !== 'SQLITE_BUSY') throw error;
            lockedOut++;
          }
          return seen.length >= answers;
        },
        20_000,
      );
    };
    const reader = new Database(file, { readonly: true });
    cleanups.push(() => reader.close());
    /** The reader takes its snapshot, then `commits` commits of 1,200 rows, each until its checkpoint answered. */
    const writeWhileReading = async (commits: number) => {
      commit(10);
      // every frame written from now on is one the reader must not see copied over its pages
      reader.exec('BEGIN');
      reader.prepare('SELECT count(*) FROM global_threepid_associations').get();
      for (let i = 1; i <= commits; i++) {
        commit(1_200);
        await probeUntilAnswered(seen.length + 1);
      }
    };
    return { file, seen, commit, probeUntilAnswered, writeWhileReading, reader, probe, lockedOut: () => lockedOut };
  }

  it('copies around it and never takes the write lock: writes go on as long as the reader reads', async () => {
    const t = setup();
    await t.writeWhileReading(3);
    // what another writer meets: never the write lock held by a checkpoint
    expect(t.lockedOut()).toBe(0);
    expect(t.seen.map((s) => s.mode)).toEqual(['PASSIVE', 'PASSIVE', 'PASSIVE']);
    // nothing could be copied past the reader's snapshot
    expect(new Set(t.seen.map((s) => s.checkpointed)).size).toBe(1);
    expect(t.seen[2]!.checkpointed).toBeLessThan(t.seen[0]!.log);
    // the reader leaves: the next checkpoint copies everything
    t.reader.exec('COMMIT');
    t.commit(1_200);
    await t.probeUntilAnswered(4);
    expect(t.seen[3]).toMatchObject({ mode: 'PASSIVE', busy: 0 });
    expect(t.seen[3]!.checkpointed).toBe(t.seen[3]!.log);
    expect(t.lockedOut()).toBe(0);
  }, 60_000);

  it('a WAL that grew long is started again by a RESTART; one a reader outlasts is not tried again for a while', async () => {
    let now = 1_000_000;
    const t = setup({ restartFrames: 2_000, now: () => now });
    await t.writeWhileReading(4);
    // past 2,000 frames: one RESTART, which waited for the reader and gave up; then PASSIVE only
    expect(t.seen.map((s) => s.mode)).toEqual(['PASSIVE', 'RESTART', 'PASSIVE', 'PASSIVE']);
    expect(t.seen[1]!.busy).toBe(1);
    t.reader.exec('COMMIT');
    now += RESTART_BACKOFF_MS;
    t.commit(10);
    await t.probeUntilAnswered(5);
    expect(t.seen[4]).toMatchObject({ mode: 'RESTART', busy: 0 });
    expect(t.seen[4]!.checkpointed).toBe(t.seen[4]!.log);
    // the writer starts the WAL from its beginning: the next commit's frames are all there is
    t.commit(10);
    await t.probeUntilAnswered(5);
    const [wal] = t.probe.pragma('wal_checkpoint(PASSIVE)') as { log: number }[];
    expect(wal!.log).toBeLessThan(100);
  }, 60_000);
});
