/**
 * docs/OPERATING.md's backup of a live database: SQLite's online backup or VACUUM INTO, taken from another
 * connection while the server runs, holds the commits still in the WAL, and a server started on the copy answers
 * with them.
 */
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { internal, lookupV1 } from './helpers/flows.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { tempDir } from './helpers/tmp.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function start(dir?: string): Promise<TestServer> {
  const t = await startTestServer(dir ? { dir } : {});
  cleanups.push(() => t.close());
  return t;
}

describe('backup of the live database', () => {
  it.each([
    ['the online backup (sqlite3 .backup)', (db: Database.Database, to: string) => db.backup(to)],
    ['VACUUM INTO', async (db: Database.Database, to: string) => void db.prepare('VACUUM INTO ?').run(to)],
  ])('%s of a running server holds its latest binding, and a server on the copy answers it', async (_name, backup) => {
    const live = await start();
    const bound = await internal(live, 'bind', {
      medium: 'email',
      address: 'backup@example.org',
      mxid: '@backup:hs.example',
    });
    expect(bound.status, bound.text).toBe(200);
    // The bind is committed in the WAL; nothing has checkpointed it into sydent.db.
    const restored = tempDir();
    cleanups.push(restored.cleanup);
    const source = new Database(path.join(live.dir, 'sydent.db'), { readonly: true });
    try {
      await backup(source, path.join(restored.dir, 'sydent.db'));
    } finally {
      source.close();
    }
    const check = new Database(path.join(restored.dir, 'sydent.db'), { readonly: true });
    expect(check.pragma('integrity_check', { simple: true })).toBe('ok');
    check.close();

    const fromCopy = await start(restored.dir);
    expect((await lookupV1(fromCopy, 'email', 'backup@example.org')).json).toMatchObject({
      mxid: '@backup:hs.example',
    });
  });
});
