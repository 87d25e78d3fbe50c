/**
 * SIGTERM with requests under way, against sydent-ts running as its own process: the drain window (`drain_seconds`)
 * first, then the stop deadline (`shutdown_timeout_seconds`). Requests that finish within it get their answer; those
 * still running at the deadline (a mail server that never answers) are answered 503 M_UNKNOWN with Retry-After, the
 * actors give up what they hold, the database is closed and the process exits 0 within a second of the deadline.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { call, hangingRequestToken } from './helpers/email.js';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { freePort, logLines, spawnServer, waitForStart, type ServerProcess } from './helpers/process.js';
import { startSilentServer, startSmtpServer } from './helpers/smtp.js';
import { tempDir } from './helpers/tmp.js';
import { loopHeld } from './helpers/loop-held.js';

const REQUEST_TOKEN = '/_matrix/identity/api/v1/validate/email/requestToken';
const VERSIONS = '/_matrix/identity/versions';

const cleanups = cleanupsAfterEach();

async function serve(
  smtpPort: number,
  http: Record<string, string>,
): Promise<{ p: ServerProcess; dir: string; base: string }> {
  const t = tempDir();
  const port = await freePort();
  const httpLines = Object.entries({
    'clientapi.http.bind_address': '127.0.0.1',
    'clientapi.http.port': String(port),
    ...http,
  }).map(([k, v]) => `${k} = ${v}`);
  fs.writeFileSync(
    path.join(t.dir, 'sydent.conf'),
    `[general]\nserver.name = is.example.test\nlog.level = INFO\n\n[http]\n${httpLines.join('\n')}\n\n` +
      `[email]\nemail.smtphost = 127.0.0.1\nemail.smtpport = ${smtpPort}\n`,
  );
  const p = spawnServer({ cwd: t.dir });
  cleanups.push(() => {
    p.child.kill('SIGKILL');
    t.cleanup();
  });
  await waitForStart(p);
  return { p, dir: t.dir, base: `http://127.0.0.1:${port}` };
}

/** Whether a new connection to the listener is refused (it stopped accepting). */
async function refused(base: string): Promise<boolean> {
  return fetch(`${base}${VERSIONS}`, { headers: { connection: 'close' } }).then(
    () => false,
    () => true,
  );
}

/** Sends SIGTERM: when it was sent, and the exit code with when it came. */
function sigterm(p: ServerProcess): { signalled: number; exited: Promise<{ code: number | string; at: number }> } {
  const signalled = Date.now();
  p.child.kill('SIGTERM');
  return { signalled, exited: p.exited.then((code) => ({ code, at: Date.now() })) };
}

/** What a stopped server leaves: no pid file, and a database closed cleanly (SQLite removes the WAL on close). */
function expectClosedCleanly(dir: string): void {
  expect(fs.existsSync(path.join(dir, 'sydent.pid')), 'the pid file').toBe(false);
  expect(fs.existsSync(path.join(dir, 'sydent.db-wal')), 'the WAL of a database never closed').toBe(false);
}

/**
 * The shutdown deadline while a slow mail is sent: far longer than the mail takes (1.5 s), so that the process exits
 * before it even on a loaded machine, while a process that waits for the deadline cannot.
 */
const SLOW_MAIL_SHUTDOWN_MS = 20_000;

describe('SIGTERM with requests under way', { timeout: 60_000 }, () => {
  it('a mail server that never answers, a body still arriving: after the drain window and the deadline both are answered 503 with Retry-After, and the process exits 0 within a second', async () => {
    // Accepts connections and never says a word.
    const silent = await startSilentServer();
    cleanups.push(() => silent.close());
    const s = await serve(silent.port, {
      drain_seconds: '1',
      shutdown_timeout_seconds: '2',
    });

    const { reply: inFlight } = await hangingRequestToken(`${s.base}${REQUEST_TOKEN}`, silent, 'shutdownsecret');
    // And a request whose body is still arriving: no actor holds it, its listener answers it at the deadline.
    const slowBody = new Promise<string>((resolve) => {
      const socket = net.connect(Number(new URL(s.base).port), '127.0.0.1', () =>
        socket.write(
          'POST /_matrix/identity/api/v1/bulk_lookup HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{',
        ),
      );
      let received = '';
      socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
      socket.on('error', () => undefined);
      socket.on('close', () => resolve(received));
    });

    const ownLoop = loopHeld(Date.now);
    cleanups.push(() => ownLoop.stop());
    const { signalled, exited } = sigterm(s.p);
    // The drain window: still serving (a load balancer stops sending meanwhile), then no new connections.
    await vi.waitFor(
      async () => expect((await fetch(`${s.base}/ready`)).status === 503, '/ready to answer 503').toBe(true),
      { timeout: 10_000, interval: 20 },
    );
    expect((await fetch(`${s.base}${VERSIONS}`)).status).toBe(200);
    await vi.waitFor(async () => expect(await refused(s.base), 'the listener to stop accepting').toBe(true), {
      timeout: 3000,
      interval: 20,
    });
    expect(Date.now() - signalled).toBeGreaterThanOrEqual(900);

    const reply = await inFlight;
    const answeredAt = reply.at;
    expect(reply.status, reply.text).toBe(503);
    expect(reply.json).toEqual({ errcode: 'M_UNKNOWN', error: 'The server is shutting down; try again shortly' });
    expect(reply.headers.get('retry-after')).toBe('5');
    // At the deadline: the drain window (1 s), then the deadline (2 s). Within a second of it, less what held up this
    // test's own loop: the next deadline a server could wrongly keep is the default's (10 s).
    expect(answeredAt - signalled).toBeGreaterThanOrEqual(2900);
    expect(answeredAt - signalled - ownLoop.within(signalled, answeredAt)).toBeLessThan(1000 + 2000 + 1000);
    // And the process exits within a second of that answer: one that stops late, or waits on the mail server, does so
    // while this loop idles.
    const exit = await exited;
    expect(exit.code).toBe(0);
    expect(exit.at - answeredAt - ownLoop.within(answeredAt, exit.at)).toBeLessThan(1000);

    const [head = '', body = ''] = (await slowBody).split('\r\n\r\n');
    expect(head.split('\r\n')[0]).toBe('HTTP/1.1 503 Service Unavailable');
    expect(head.toLowerCase()).toContain('\r\nretry-after: 5');
    expect(head.toLowerCase()).toContain('\r\nconnection: close');
    expect(JSON.parse(body)).toEqual({ errcode: 'M_UNKNOWN', error: 'The server is shutting down; try again shortly' });
    expect(logLines(s.p, 'stopping: requests still under way at the deadline are answered 503')).toEqual([
      expect.objectContaining({ listener: 'client', requests: 1 }),
    ]);
    // The actors gave the mail's request up at the deadline, and its route answered it (its request line says so).
    expect(logLines(s.p, 'request').map((l) => [l['url'], l['status']])).toContainEqual([REQUEST_TOKEN, 503]);
    const abandoned = logLines(s.p, 'stopping: the deadline passed; work still under way was abandoned');
    expect(abandoned.length).toBeGreaterThanOrEqual(1);
    expect(abandoned[0]!['requests']).toBeGreaterThanOrEqual(1);
    // an expected stop, not a bug
    expect(s.p.stderr()).not.toContain('"level":50');
    expectClosedCleanly(s.dir);
  });

  it('a slow mail server: the request under way finishes with its answer and mail, new connections are refused, and the process exits 0 without waiting for the deadline', async () => {
    const smtp = await startSmtpServer({ answerAfterMs: 1500 });
    cleanups.push(() => smtp.close());
    const s = await serve(smtp.port, { shutdown_timeout_seconds: String(SLOW_MAIL_SHUTDOWN_MS / 1000) });

    const inFlight = call(`${s.base}${REQUEST_TOKEN}`, {
      body: { client_secret: 'shutdownsecret', email: 'slow@example.org', send_attempt: 1 },
    });
    // the mail is being sent (its answer comes 1.5 s after the message)
    await new Promise((r) => setTimeout(r, 500));
    const { signalled, exited } = sigterm(s.p);
    await vi.waitFor(async () => expect(await refused(s.base), 'the listener to stop accepting').toBe(true), {
      timeout: 3000,
      interval: 20,
    });

    const reply = await inFlight;
    expect(reply.status, reply.text).toBe(200);
    expect(reply.json).toEqual({ sid: expect.any(String) });
    expect(smtp.messages.map((m) => m.to)).toEqual([['slow@example.org']]);
    const exit = await exited;
    expect(exit.code).toBe(0);
    // About 1.5 s after the signal, and before the deadline however late a loaded machine runs it: a process that
    // waits for the deadline exits after it (its timer never fires early).
    expect(exit.at - signalled).toBeLessThan(SLOW_MAIL_SHUTDOWN_MS);
    expect(logLines(s.p, 'stopping: requests still under way at the deadline are answered 503')).toEqual([]);
    expect(logLines(s.p, 'stopping: the deadline passed; work still under way was abandoned')).toEqual([]);
    expectClosedCleanly(s.dir);
  });
});
