/**
 * A request's deadline aborts the work it started: a mail server or an SMS provider slower than the request's time
 * gets the request answered as failed at the deadline (500 M_EMAIL_SEND_ERROR / M_SEND_ERROR, never M_UNKNOWN), the
 * session records the failed send, and no mail or SMS arrives later for it.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { call, emailConf, sessionRows } from './helpers/email.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSlowSmtpServer } from './helpers/smtp.js';
import { loopbackAllowed, OM_CREDS, openMarketConf, startOpenMarket } from './helpers/sms-providers.js';

const started: { close(): Promise<void> }[] = [];
afterAll(async () => {
  for (const s of started.reverse()) await s.close();
});

/** The time a requestToken has in these tests (`[http] send_deadline_seconds`). */
const DEADLINE_MS = 3_000;
/** How long the slow mail server and SMS provider take: well past the deadline. */
const SLOW_MS = 8_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Answered when the deadline passed, not when the slow server answered: the upper bound is the midpoint between the
 * two, so that a loaded machine (a late timer, a slow loopback) cannot fail the test while an answer that waited
 * for the slow server still does.
 */
function expectAnsweredAtTheDeadline(took: number): void {
  expect(took).toBeGreaterThanOrEqual(DEADLINE_MS - 1_500);
  expect(took).toBeLessThan((DEADLINE_MS + SLOW_MS) / 2);
}

async function server(conf: Record<string, Record<string, string>>): Promise<TestServer> {
  const t = await startTestServer({ conf: { ...conf, http: { send_deadline_seconds: String(DEADLINE_MS / 1000) } } });
  started.push(t);
  return t;
}

async function machineState(t: TestServer, sid: unknown): Promise<string> {
  const res = await call(t.internalUrl(`/_sydent/debug/sessions/${String(sid)}`));
  return String(res.json['state']);
}

describe('a request whose mail or SMS is not accepted within its deadline', () => {
  it('a mail server that answers DATA after 8 s: 500 M_EMAIL_SEND_ERROR at the deadline, the send aborted, no mail afterwards', async () => {
    const slow = await startSlowSmtpServer({ dataDelayMs: SLOW_MS });
    started.push(slow);
    const t = await server({ email: emailConf(slow.port) });

    const began = Date.now();
    const res = await call(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), {
      body: { client_secret: 'slowsmtp', email: 'slow@example.org', send_attempt: 1 },
    });
    const took = Date.now() - began;
    expect(res.status, res.text).toBe(500);
    expect(res.json).toEqual({ errcode: 'M_EMAIL_SEND_ERROR', error: 'Failed to send email' });
    expectAnsweredAtTheDeadline(took);
    // The exchange had reached the slow step: the server had the DATA command.
    expect(slow.dataCommands).toBeGreaterThanOrEqual(1);
    const [session] = sessionRows(t.config.db.dbFile);
    expect(await machineState(t, session!.id)).toBe('sendFailed');

    // Past the server's delay: it would have taken the message by now, had the client still been there.
    await sleep(SLOW_MS - took + 1_500);
    expect(slow.messages).toEqual([]);
  }, 30_000);

  it('an SMS provider that answers after 8 s: 500 M_SEND_ERROR at the deadline, the request to it aborted, no SMS afterwards', async () => {
    const om = await startOpenMarket(OM_CREDS);
    started.push(om);
    om.answerAfterMs = SLOW_MS;
    const t = await server({ general: loopbackAllowed, sms: openMarketConf(om) });

    const began = Date.now();
    const res = await call(t.url('/_matrix/identity/api/v1/validate/msisdn/requestToken'), {
      body: { client_secret: 'slowsms', country: 'GB', phone_number: '07700 900123', send_attempt: 1 },
    });
    const took = Date.now() - began;
    expect(res.status, res.text).toBe(500);
    expect(res.json).toEqual({ errcode: 'M_SEND_ERROR', error: 'Failed to send SMS' });
    expectAnsweredAtTheDeadline(took);
    // The provider had the request: it was the answer that was slow.
    expect(om.requests).toHaveLength(1);
    const [session] = sessionRows(t.config.db.dbFile);
    expect(await machineState(t, session!.id)).toBe('sendFailed');

    await sleep(SLOW_MS - took + 1_500);
    expect(om.messages).toEqual([]);
  }, 30_000);
});
