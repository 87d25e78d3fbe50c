/**
 * The database when something outside the server gets in the way: another process holding the write lock, a full
 * disk, the database file moved away. The event loop never waits on the lock (reads and status endpoints answer
 * at once), a write that cannot be made answers 503 M_UNKNOWN with Retry-After and leaves nothing half-written and
 * nothing sent, the cause is logged once, and the server works again without a restart once the cause is gone.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { call, emailConf, type Reply } from './helpers/email.js';
import { rows } from './helpers/rows.js';
import { inviteBody, storeInvite } from './helpers/invites.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer } from './helpers/smtp.js';
import { tempDir } from './helpers/tmp.js';

const cleanups: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A log that keeps its lines, for counting how often a cause was logged. */
function capturingLog() {
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'info' },
    { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) },
  );
  return { log, lines, count: (pattern: RegExp) => lines.filter((l) => pattern.test(String(l['msg']))).length };
}

async function timed(f: () => Promise<Reply>): Promise<{ res: Reply; ms: number }> {
  const began = performance.now();
  const res = await f();
  return { res, ms: performance.now() - began };
}

const bind = (t: TestServer, address: string) =>
  call(t.internalUrl('/_matrix/identity/internal/bind'), {
    body: { medium: 'email', address, mxid: `@${address.split('@')[0]}:hs.test` },
  });
const lookup = (t: TestServer, address: string) =>
  call(t.url(`/_matrix/identity/api/v1/lookup?medium=email&address=${encodeURIComponent(address)}`));
const versions = (t: TestServer) => call(t.url('/_matrix/identity/versions'));

/**
 * Another process (the sqlite3 shell, a backup tool) holding the write lock of `dbFile` for `ms`: resolves once it
 * holds it, with the process (which exits when it lets go).
 */
async function holdWriteLock(dbFile: string, ms: number): Promise<ChildProcess> {
  const script = `
    const Database = require('better-sqlite3');
    const db = new Database(process.argv[1]);
    db.exec('BEGIN IMMEDIATE');
    process.stdout.write('locked\\n');
    setTimeout(() => { db.exec('ROLLBACK'); db.close(); }, Number(process.argv[2]));`;
  const child = spawn(process.execPath, ['-e', script, dbFile, String(ms)], {
    cwd: process.cwd(),
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  cleanups.push(() => child.kill('SIGKILL'));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('locked')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`the lock holder exited (${String(code)}) before taking the lock`)));
  });
  return child;
}

const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', () => resolve())));

describe('another process holds the write lock', () => {
  it('reads and /versions answer at once; a write answers 503 with Retry-After at its deadline, or waits for the lock within it', async () => {
    const { log, count } = capturingLog();
    const t = await startTestServer({ conf: { http: { request_deadline_seconds: '2' } }, log });
    cleanups.push(() => t.close());
    expect((await bind(t, 'before@example.org')).status).toBe(200);

    const holder = await holdWriteLock(t.config.db.dbFile, 5_000);
    const status = await timed(() => versions(t));
    expect(status.res.status).toBe(200);
    expect(status.ms).toBeLessThan(500);
    const read = await timed(() => lookup(t, 'before@example.org'));
    expect(read.res.json['mxid']).toBe('@before:hs.test');
    expect(read.ms).toBeLessThan(500);

    // Meanwhile a write waits for the lock off the event loop: status answers stay fast while it waits.
    const write = timed(() => bind(t, 'during@example.org'));
    const whileWaiting = await timed(() => versions(t));
    expect(whileWaiting.ms).toBeLessThan(500);
    const refused = await write;
    expect(refused.res.status, refused.res.text).toBe(503);
    expect(refused.res.json['errcode']).toBe('M_UNKNOWN');
    expect(refused.res.headers.get('retry-after')).toBe('1');
    expect(refused.ms).toBeGreaterThanOrEqual(1_500);
    expect(refused.ms).toBeLessThan(4_000);
    await exited(holder);
    // Nothing of it was written.
    expect(await lookup(t, 'during@example.org')).toMatchObject({ status: 200, json: {} });
    expect(
      rows(t.config.db.dbFile, "SELECT id FROM local_threepid_associations WHERE address = 'during@example.org'"),
    ).toEqual([]);
    expect(count(/locked by another process/)).toBe(1);

    // A lock held for less than the write's time: the write waits for it, then succeeds.
    const brief = await holdWriteLock(t.config.db.dbFile, 700);
    const waited = await timed(() => bind(t, 'after@example.org'));
    expect(waited.res.status, waited.res.text).toBe(200);
    expect(waited.ms).toBeGreaterThanOrEqual(400);
    await exited(brief);
    expect((await lookup(t, 'after@example.org')).json['mxid']).toBe('@after:hs.test');
    expect(count(/writes work again/)).toBe(1);
  }, 30_000);
});

describe('the database file is moved away under the server', () => {
  it('a write answers 503 (nothing written anywhere), the cause is logged once, and writes work again once it is back', async () => {
    const { log, count } = capturingLog();
    const t = await startTestServer({ log });
    cleanups.push(() => t.close());
    const file = t.config.db.dbFile;
    fs.renameSync(file, `${file}.moved`);
    for (const address of ['gone1@example.org', 'gone2@example.org']) {
      const res = await bind(t, address);
      expect(res.status, res.text).toBe(503);
      expect(res.json).toEqual({ errcode: 'M_UNKNOWN', error: 'The database file was removed from under the server' });
      expect(res.headers.get('retry-after')).toBe('10');
    }
    expect(count(/removed from under the server/)).toBe(1);
    fs.renameSync(`${file}.moved`, file);
    expect((await bind(t, 'back@example.org')).status).toBe(200);
    expect(rows(file, 'SELECT address FROM local_threepid_associations ORDER BY id').map((r) => r['address'])).toEqual([
      'back@example.org',
    ]);
    expect(count(/writes work again/)).toBe(1);
  });
});

/** A tmpfs of `size` mounted for this test (the suite runs as root in CI); fails saying why when it cannot. */
function mountTmpfs(size: string): string {
  const dir = tempDir();
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir.dir], {
    encoding: 'utf8',
  });
  if (mounted.status !== 0) {
    throw new Error(
      `the full-disk test needs a small tmpfs and could not mount one (${(mounted.stderr || mounted.error?.message || '').trim()}); ` +
        'run the suite as root, as .ci/run does',
    );
  }
  cleanups.push(() => {
    spawnSync('umount', [dir.dir]);
    dir.cleanup();
  });
  return dir.dir;
}

/** Fills the file system of `dir` to the last byte; returns the filler's path. */
function fillDisk(dir: string): string {
  const filler = path.join(dir, 'filler');
  const fd = fs.openSync(filler, 'w');
  const block = Buffer.alloc(64 * 1024, 1);
  try {
    for (let size = block.length; size >= 1;) {
      try {
        fs.writeSync(fd, block, 0, size);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
        size = Math.floor(size / 2);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
  return filler;
}

describe('the disk is full', () => {
  it('every write answers 503 with Retry-After, nothing is mailed, the cause is logged once; after space is freed the same requests work', async () => {
    const dir = mountTmpfs('4m');
    const smtp = await startSmtpServer();
    cleanups.push(() => smtp.close());
    const { log, count } = capturingLog();
    const t = await startTestServer({ dir, conf: { email: emailConf(smtp.port) }, log });
    cleanups.push(() => t.server.close());
    const requestToken = () =>
      call(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
        body: { client_secret: 'diskfull', email: 'full@example.org', send_attempt: 1 },
      });
    const invite = () => storeInvite(t, 'v1', inviteBody({ address: 'invited@example.org' }));

    const filler = fillDisk(dir);
    for (const attempt of [requestToken, invite, () => bind(t, 'bound@example.org')]) {
      const res = await attempt();
      expect(res.status, res.text).toBe(503);
      expect(res.json).toEqual({ errcode: 'M_UNKNOWN', error: 'The database cannot be written: the disk is full' });
      expect(res.headers.get('retry-after')).toBe('10');
    }
    // Nothing was sent for requests that failed (a late mail would carry a token no session has).
    await sleep(500);
    expect(smtp.messages).toEqual([]);
    expect(count(/the disk is full/)).toBe(1);
    // Reads still answer.
    expect((await versions(t)).status).toBe(200);
    expect((await lookup(t, 'bound@example.org')).json).toEqual({});

    fs.rmSync(filler);
    const token = await requestToken();
    expect(token.status, token.text).toBe(200);
    await smtp.waitForMessage((m) => m.to.includes('full@example.org'));
    expect((await invite()).status).toBe(200);
    await smtp.waitForMessage((m) => m.to.includes('invited@example.org'));
    expect((await bind(t, 'bound@example.org')).status).toBe(200);
    expect((await lookup(t, 'bound@example.org')).json['mxid']).toBe('@bound:hs.test');
    expect(smtp.messages).toHaveLength(2);
    expect(count(/writes work again/)).toBe(1);
  }, 30_000);
});
