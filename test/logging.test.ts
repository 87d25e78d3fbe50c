/**
 * The log as an operator reads it: JSON lines with ISO timestamps, the listener and a request id unique across
 * listeners; readable lines on a terminal; the log file's mode, group, midnight rotation as Sydent's, and reopening
 * for logrotate.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { openLog, type Logging } from '../src/log.js';
import { rotatedName } from '../src/log-file.js';
import { startTestServer } from './helpers/server.js';
import { tempDir } from './helpers/tmp.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const c of cleanups.splice(0).reverse()) await c();
});

function dir(): string {
  const t = tempDir();
  cleanups.push(t.cleanup);
  return t.dir;
}

function open(opts: Parameters<typeof openLog>[0]): Logging {
  const logging = openLog(opts);
  cleanups.push(() => logging.close());
  return logging;
}

/** A stream collecting what is written, as a terminal or a pipe would receive it. */
function sink(tty: boolean): { stream: PassThrough & { isTTY?: boolean }; text: () => string } {
  const stream = new PassThrough() as PassThrough & { isTTY?: boolean };
  if (tty) stream.isTTY = true;
  let text = '';
  stream.setEncoding('utf8').on('data', (d: string) => (text += d));
  return { stream, text: () => text };
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

function entries(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('log lines', () => {
  it('are JSON with ISO timestamps, the listener, and request ids unique across listeners', async () => {
    const out = sink(false);
    const { log } = open({ level: 'INFO', path: '', stream: out.stream });
    const t = await startTestServer({ log });
    cleanups.push(() => t.close());
    for (let i = 0; i < 3; i++) {
      await fetch(t.url('/_matrix/identity/versions'));
      await fetch(t.internalUrl('/_sydent/debug/actors'));
    }
    // and one through the v2 lookup's lane, answered ahead of fastify
    await fetch(t.url('/_matrix/identity/v2/lookup'), {
      method: 'POST',
      body: '{}',
      headers: { 'content-type': 'application/json' },
    });
    await vi.waitFor(
      () =>
        expect(entries(out.text()).filter((e) => e['msg'] === 'request').length === 7, 'seven request lines').toBe(
          true,
        ),
      { timeout: 5000 },
    );

    const all = entries(out.text());
    for (const e of all) expect(e['time']).toMatch(ISO);
    const requests = all.filter((e) => e['msg'] === 'request');
    expect(requests.filter((e) => e['listener'] === 'client')).toHaveLength(4);
    expect(requests.filter((e) => e['listener'] === 'internal')).toHaveLength(3);
    const ids = requests.map((e) => e['reqId']);
    expect(ids.every((id) => typeof id === 'string' && id !== '')).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    // the start-up lines of the listeners name them too
    expect(
      all
        .filter((e) => String(e['msg']).startsWith('Server listening'))
        .map((e) => e['listener'])
        .sort(),
    ).toEqual(['client', 'internal']);
  });

  it('are readable single lines, not JSON, when the log goes to a terminal', async () => {
    const out = sink(true);
    const { log } = open({ level: 'INFO', path: '', stream: out.stream });
    log.info({ listener: 'client', status: 200 }, 'request');
    await vi.waitFor(() => expect(out.text().includes('\n'), 'a line').toBe(true), { timeout: 5000 });
    const line = out.text().split('\n')[0]!;
    expect(() => JSON.parse(line) as unknown).toThrow();
    expect(line).toMatch(/^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\] .*INFO.*: .*request.* .*"listener":"client"/);
  });
});

describe('the log file', () => {
  it('is created 0600, JSON, and an existing file readable by others is reported', async () => {
    const d = dir();
    const file = path.join(d, 'sydent.log');
    const logging = open({ level: 'INFO', path: file });
    logging.log.info({ n: 1 }, 'first');
    await logging.close();
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(entries(fs.readFileSync(file, 'utf8'))).toEqual([
      expect.objectContaining({ msg: 'first', n: 1, time: expect.stringMatching(ISO) }),
    ]);

    const old = path.join(d, 'old.log');
    fs.writeFileSync(old, '', { mode: 0o644 });
    fs.chmodSync(old, 0o644);
    const again = open({ level: 'INFO', path: old });
    await again.close();
    expect(entries(fs.readFileSync(old, 'utf8'))).toEqual([
      expect.objectContaining({
        level: 40,
        msg: expect.stringContaining(`log file ${old} is readable by others (mode 644)`),
      }),
    ]);
  });

  it('is created 0640 and of log.group when one is configured', async () => {
    const d = dir();
    const file = path.join(d, 'sydent.log');
    const gid = process.getgid!();
    const logging = open({ level: 'INFO', path: file, group: String(gid) });
    await logging.close();
    const st = fs.statSync(file);
    expect(st.mode & 0o777).toBe(0o640);
    expect(st.gid).toBe(gid);
  });

  it('refuses a directory that does not exist and a group that does not', () => {
    const d = dir();
    expect(() => openLog({ level: 'INFO', path: path.join(d, 'no', 'such', 'sydent.log') })).toThrow(
      /^log\.path .*no\/such\/sydent\.log: ENOENT/,
    );
    expect(fs.existsSync(path.join(d, 'no'))).toBe(false);
    expect(() => openLog({ level: 'INFO', path: path.join(d, 'x.log'), group: 'no-such-group-sydent' })).toThrow(
      'log.group: no group named "no-such-group-sydent"',
    );
  });

  it('rotates at local midnight to <name>.YYYY-MM-DD, keeping writing under the configured name', async () => {
    const d = dir();
    const file = path.join(d, 'sydent.log');
    const today = new Date();
    const beforeMidnight = new Date(today.getFullYear(), today.getMonth(), today.getDate(), 23, 59, 59, 500);
    // Only Date is faked, moving with real time: the rotation's real timer fires half a second later.
    vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true, now: beforeMidnight });
    const logging = open({ level: 'INFO', path: file });
    logging.log.info('before midnight');
    const rotated = path.join(d, rotatedName('sydent.log', beforeMidnight));
    await vi.waitFor(() => expect(fs.existsSync(rotated), `the rotated ${rotated}`).toBe(true), { timeout: 5000 });
    logging.log.info('after midnight');
    await logging.close();
    expect(path.basename(rotated)).toBe(
      `sydent.log.${beforeMidnight.getFullYear()}-${String(beforeMidnight.getMonth() + 1).padStart(2, '0')}-${String(beforeMidnight.getDate()).padStart(2, '0')}`,
    );
    expect(entries(fs.readFileSync(rotated, 'utf8')).map((e) => e['msg'])).toEqual(['before midnight']);
    expect(entries(fs.readFileSync(file, 'utf8')).map((e) => e['msg'])).toEqual(['after midnight']);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it('rotates a file left from an earlier day at start, and keeps log.backup_count rotated files', async () => {
    const d = dir();
    const file = path.join(d, 'sydent.log');
    const day = 24 * 3600 * 1000;
    const names: string[] = [];
    for (const daysAgo of [3, 2, 1]) {
      // a run on that day left its lines; the next start finds the file dated then
      const logging = open({ level: 'INFO', path: file, backupCount: 2 });
      logging.log.info({ daysAgo }, 'run');
      await logging.close();
      const then = new Date(Date.now() - daysAgo * day);
      fs.utimesSync(file, then, then);
      names.push(rotatedName('sydent.log', then));
    }
    const last = open({ level: 'INFO', path: file, backupCount: 2 });
    last.log.info('today');
    await last.close();
    await vi.waitFor(
      () => expect(!fs.existsSync(path.join(d, names[0]!)), 'the oldest rotated file removed').toBe(true),
      { timeout: 5000 },
    );
    const rotatedFiles = fs.readdirSync(d).filter((f) => /^sydent\.log\.\d{4}-/.test(f));
    expect(rotatedFiles.sort()).toEqual([names[1], names[2]].sort());
    expect(entries(fs.readFileSync(path.join(d, names[2]!), 'utf8')).map((e) => e['daysAgo'])).toEqual([1]);
    expect(entries(fs.readFileSync(file, 'utf8')).map((e) => e['msg'])).toEqual(['today']);
  });

  it('reopen() (SIGHUP) starts a new 0600 file under the name after logrotate moved it', async () => {
    const d = dir();
    const file = path.join(d, 'sydent.log');
    const logging = open({ level: 'INFO', path: file });
    logging.log.info('one');
    await vi.waitFor(
      () => expect(fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes('one'), 'the first line').toBe(true),
      { timeout: 5000 },
    );
    fs.renameSync(file, `${file}.1`);
    logging.reopen();
    logging.log.info('two');
    await logging.close();
    expect(entries(fs.readFileSync(`${file}.1`, 'utf8')).map((e) => e['msg'])).toEqual(['one']);
    expect(entries(fs.readFileSync(file, 'utf8')).map((e) => e['msg'])).toEqual(['two']);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });
});
