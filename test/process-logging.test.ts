/**
 * The log file and the signals as an operator meets them, with sydent-ts running as its own process: SIGHUP reopens
 * the file after logrotate moved it, SIGTERM drains behind /ready before the listeners close.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { freePort, spawnServer, type ServerProcess } from './helpers/process.js';
import { tempDir } from './helpers/tmp.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function messages(file: string): string[] {
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => String((JSON.parse(l) as { msg: unknown }).msg));
}

async function serve(conf: {
  general?: string;
  http?: string;
}): Promise<{ p: ServerProcess; dir: string; base: string }> {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const port = await freePort();
  fs.writeFileSync(
    path.join(t.dir, 'sydent.conf'),
    `[general]\nserver.name = is.example.test\n${conf.general ?? ''}\n` +
      `[http]\nclientapi.http.bind_address = 127.0.0.1\nclientapi.http.port = ${port}\n${conf.http ?? ''}\n`,
  );
  const p = spawnServer({ cwd: t.dir });
  cleanups.push(() => p.child.kill('SIGKILL'));
  return { p, dir: t.dir, base: `http://127.0.0.1:${port}` };
}

// A process start takes seconds on a loaded machine.
describe('sydent-ts as a process: the log and the signals', { timeout: 60_000 }, () => {
  it('logs to log.path (0600), and on SIGHUP writes a new file under that name after logrotate moved the old one', async () => {
    const { p, dir, base } = await serve({ general: 'log.path = sydent.log\nlog.level = INFO' });
    const file = path.join(dir, 'sydent.log');
    await vi.waitFor(
      () => expect(messages(file).includes('sydent-ts started'), 'the start line in the file').toBe(true),
      { timeout: 15_000 },
    );
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(p.stderr()).toBe('');

    fs.renameSync(file, `${file}.1`);
    p.child.kill('SIGHUP');
    await vi.waitFor(
      () => expect(messages(file).includes('log file reopened (SIGHUP)'), 'the reopened file').toBe(true),
      { timeout: 15_000 },
    );
    expect((await fetch(`${base}/_matrix/identity/versions`)).status).toBe(200);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);

    expect(messages(`${file}.1`)).toContain('sydent-ts started');
    expect(messages(`${file}.1`)).not.toContain('request');
    // written and flushed before the process exited
    expect(messages(file)).toEqual(expect.arrayContaining(['log file reopened (SIGHUP)', 'request', 'shutting down']));
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it('survives SIGHUP without a log file (systemctl reload); on SIGTERM answers /ready with 503 for drain_seconds while still serving, then exits 0', async () => {
    const { p, base } = await serve({ http: 'drain_seconds = 2' });
    await vi.waitFor(
      async () => expect((await fetch(`${base}/ready`).catch(() => null))?.status === 200, 'ready').toBe(true),
      { timeout: 15_000 },
    );
    p.child.kill('SIGHUP');
    await vi.waitFor(
      () => expect(p.stderr().includes('SIGHUP: logging to stderr, no file to reopen'), 'the SIGHUP line').toBe(true),
      { timeout: 15_000 },
    );
    expect((await fetch(`${base}/ready`)).status).toBe(200);
    p.child.kill('SIGTERM');
    await vi.waitFor(
      async () => expect((await fetch(`${base}/ready`)).status === 503, '/ready to answer 503').toBe(true),
      { timeout: 15_000 },
    );
    const ready = (await (await fetch(`${base}/ready`)).json()) as Record<string, unknown>;
    expect(ready).toMatchObject({ ready: false, status: 'draining' });
    expect((await fetch(`${base}/_matrix/identity/versions`)).status).toBe(200);
    expect(await p.exited).toBe(0);
    await expect(fetch(`${base}/health`)).rejects.toThrow();
  });
});
