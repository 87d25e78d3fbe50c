/**
 * The stop's deadline is counted from the stop's start: `drain_seconds` + `shutdown_timeout_seconds` after `close()`
 * was called, however late the drain window's timer fires. On a loaded machine that timer can fire seconds late; a
 * deadline counted from the drain's end would then move past the one main.ts holds the process to (and exit 1 a stop
 * that was going well). Here the server's own event loop is held while it drains, so its timer fires late for sure.
 */
import { expect, it } from 'vitest';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { hangingRequestToken } from './helpers/email.js';
import { startTestServer } from './helpers/server.js';
import { startSilentServer } from './helpers/smtp.js';

const cleanups = cleanupsAfterEach();

const DRAIN_S = 1;
const TIMEOUT_S = 2;
/** How long the loop is held from just after the stop's start: well past the deadline (3 s). */
const HELD_MS = 3500;

it(
  'a drain timer that fires late shortens the rest: a request under way is answered 503 and the stop ends soon after the loop is free, not a full timeout later',
  { timeout: 30_000 },
  async () => {
    // A mail server that accepts and never says a word: the requestToken stays under way until the deadline.
    const silent = await startSilentServer();
    cleanups.push(() => silent.close());
    const t = await startTestServer({
      conf: {
        http: { drain_seconds: String(DRAIN_S), shutdown_timeout_seconds: String(TIMEOUT_S) },
        email: { 'email.smtphost': '127.0.0.1', 'email.smtpport': String(silent.port) },
      },
    });
    cleanups.push(() => t.close());

    const { reply: inFlight } = await hangingRequestToken(
      t.url('/_matrix/identity/api/v1/validate/email/requestToken'),
      silent,
      'deadlinesecret',
    );

    const started = Date.now();
    const stopped = t.server.close({ drain: true }).then(() => Date.now());
    // The drain timer (1 s) cannot fire before the loop is free again, 3.5 s after the start.
    await new Promise((r) => setTimeout(r, 50));
    const busyUntil = Date.now() + HELD_MS;
    while (Date.now() < busyUntil);
    const freed = Date.now();
    expect(freed - started, 'the loop held past the deadline').toBeGreaterThan((DRAIN_S + TIMEOUT_S) * 1000);

    const reply = await inFlight;
    expect(reply.status, reply.text).toBe(503);
    expect(reply.json).toEqual({ errcode: 'M_UNKNOWN', error: 'The server is shutting down; try again shortly' });
    const stoppedAt = await stopped;
    // The deadline had passed when the loop came free, so what is left is given up at once. A deadline counted from
    // the drain's end would fall a full timeout (2 s) after the loop came free, and no timer fires early.
    expect(reply.at - freed).toBeLessThan(TIMEOUT_S * 1000 - 500);
    expect(stoppedAt - freed).toBeLessThan(TIMEOUT_S * 1000 - 300);
  },
);
