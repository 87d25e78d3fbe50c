/**
 * The store's group commit on a real SQLite file: the writes of one turn of the event loop share one transaction,
 * each in its own savepoint, and each caller hears of its write only after the commit; a database locked by another
 * connection is waited for off the event loop, within each write's deadline.
 */
import Database from 'better-sqlite3';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { RequestContext } from '../src/actors/request-context.js';
import { closeDatabase, openDatabase } from '../src/store/database.js';
import { GroupCommitter } from '../src/store/group-commit.js';
import { DatabaseFile, StoreHealth } from '../src/store/health.js';
import { StoreUnavailableError } from '../src/store/unavailable.js';
import { tempDir } from './helpers/tmp.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

function setup() {
  const tmp = tempDir();
  const file = path.join(tmp.dir, 'sydent.db');
  const db = openDatabase(file);
  db.pragma('busy_timeout = 0');
  const events: string[] = [];
  const committer = new GroupCommitter(db, {
    file: new DatabaseFile(file),
    health: new StoreHealth(pino({ level: 'silent' }), file),
    afterCommit: () => events.push('commit'),
  });
  cleanups.push(() => {
    committer.close();
    closeDatabase(db);
    tmp.cleanup();
  });
  const put = (key: string) => db.prepare('INSERT INTO sydent_ts_meta (key, value) VALUES (?, ?)').run(key, 'v');
  const keys = () => db.prepare('SELECT key FROM sydent_ts_meta ORDER BY key').pluck().all() as string[];
  return { db, file, committer, events, put, keys };
}

const inAWhile = (ms: number) => ({ deadline: Date.now() + ms });

describe('group commit', () => {
  it('writes of one turn share one commit, each in its own savepoint; every caller is answered after the commit', async () => {
    const { committer, events, put, keys } = setup();
    const answered = (name: string) => () => void events.push(`answer ${name}`);
    const a = committer.submit(() => put('a'), inAWhile(5000)).then(answered('a'));
    // Writes b2, then fails (a's key again): its savepoint is rolled back, b2 with it, and only b fails.
    const b = committer
      .submit(() => {
        put('b2');
        put('a');
      }, inAWhile(5000))
      .then(answered('b'), (error: unknown) => void events.push(`failed b: ${(error as { code?: string }).code}`));
    const c = committer.submit(() => put('c'), inAWhile(5000)).then(answered('c'));
    await Promise.all([a, b, c]);
    expect(events).toEqual(['commit', 'answer a', 'failed b: SQLITE_CONSTRAINT_PRIMARYKEY', 'answer c']);
    expect(keys()).toEqual(['a', 'c']);
  });

  it('a lock held by another connection is waited for off the event loop, and the write made once it is gone', async () => {
    const { file, committer, put, keys } = setup();
    const other = new Database(file);
    cleanups.push(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    // The event loop keeps turning while the write waits: a timer's lateness shows it.
    let worstLateness = 0;
    let last = performance.now();
    const ticker = setInterval(() => {
      const now = performance.now();
      worstLateness = Math.max(worstLateness, now - last - 5);
      last = now;
    }, 5);
    cleanups.push(() => clearInterval(ticker));
    setTimeout(() => other.exec('ROLLBACK'), 300);
    const began = performance.now();
    await committer.submit(() => put('after'), inAWhile(5000));
    expect(performance.now() - began).toBeGreaterThanOrEqual(250);
    expect(worstLateness).toBeLessThan(100);
    expect(keys()).toEqual(['after']);
  });

  it('a write whose deadline passes while the lock is held is answered StoreUnavailableError (busy), and nothing of it is written', async () => {
    const { file, committer, put, keys } = setup();
    const other = new Database(file);
    cleanups.push(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    const began = Date.now();
    const error = await committer.submit(() => put('late'), inAWhile(200)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as StoreUnavailableError).reason).toBe('busy');
    expect(Date.now() - began).toBeGreaterThanOrEqual(180);
    expect(Date.now() - began).toBeLessThan(1000);
    other.exec('ROLLBACK');
    expect(keys()).toEqual([]);
  });

  it('a write whose caller gave up before its turn is not made', async () => {
    const { committer, put, keys } = setup();
    // What the store supervisor passes: the ask's own context.
    const request = new RequestContext(Date.now() + 5000);
    const write = committer.submit(() => put('abandoned'), request);
    request.abort(new Error('the client went away'));
    await expect(write).rejects.toThrow('the client went away');
    expect(keys()).toEqual([]);
  });
});
