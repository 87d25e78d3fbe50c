/**
 * A token cannot be guessed: an SMS code has 10^6 values and never changes while the session lives, so each
 * session takes MAX_WRONG_TOKENS wrong tokens, after which its token is void (400 M_TOKEN_INCORRECT, the right
 * one too) until a requestToken with a higher send_attempt sends a new one; the count is stored with the session
 * and survives a restart. Each client address (X-Forwarded-For only from trusted proxies) may submit
 * `submit_token.ratelimit` wrong tokens, across sessions, endpoints and APIs: then 429 M_LIMIT_EXCEEDED.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { MAX_WRONG_TOKENS } from '../src/machines/validation-session.js';
import { call, emailConf, mailToken, type Reply } from './helpers/email.js';
import { phoneRequest } from './helpers/msisdn.js';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { openMarketForFile, smtpServerForFile } from './helpers/per-file.js';
import { rows } from './helpers/rows.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { loopbackAllowed, openMarketConf, smsCode } from './helpers/sms-providers.js';

const om = openMarketForFile();
const smtp = smtpServerForFile();
const cleanups = cleanupsAfterEach();

const v1 = (t: TestServer, p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const smsTo = (msisdn: string) => om.messages.filter((m) => m.to === msisdn);
/** A 6-digit code that is not `code`. */
const wrongCode = (code: string, i: number) => String((Number(code) + 1 + i) % 1_000_000).padStart(6, '0');

async function requestSms(t: TestServer, secret: string, phone: string, sendAttempt: number): Promise<string> {
  const res = await call(v1(t, '/validate/msisdn/requestToken'), {
    body: phoneRequest(secret, 'GB', phone, sendAttempt),
  });
  expect(res.status, res.text).toBe(200);
  return res.json['sid'] as string;
}

const submitSms = (t: TestServer, sid: string, secret: string, token: string): Promise<Reply> =>
  call(v1(t, '/validate/msisdn/submitToken'), { body: { sid, client_secret: secret, token } });

describe('wrong tokens per session', () => {
  it(`after ${MAX_WRONG_TOKENS} wrong codes the right one is refused, across a restart, until a new code is sent`, async () => {
    const sms = openMarketConf(om);
    const first = await startTestServer({ conf: { general: loopbackAllowed, sms } });
    cleanups.push(() => first.close());
    const secret = 'guess1';
    const msisdn = '447700900801';
    const sid = await requestSms(first, secret, '07700 900801', 1);
    const code = smsCode(smsTo(msisdn)[0]!);

    for (let i = 0; i < MAX_WRONG_TOKENS; i++) {
      const res = await submitSms(first, sid, secret, wrongCode(code, i));
      expect(res.status, res.text).toBe(400);
      expect(res.json).toMatchObject({ errcode: 'M_TOKEN_INCORRECT', error: 'The token is incorrect', success: false });
    }
    const refused = await submitSms(first, sid, secret, code);
    expect(refused.status).toBe(400);
    expect(refused.json).toMatchObject({ errcode: 'M_TOKEN_INCORRECT', success: false });
    expect(refused.json['error']).toMatch(/^Too many incorrect tokens/);
    // The GET link refuses it as well.
    const page = await call(v1(first, `/validate/msisdn/submitToken?sid=${sid}&client_secret=${secret}&token=${code}`));
    expect(page.status).toBe(400);
    expect(rows(first, 'SELECT validated FROM threepid_validation_sessions WHERE id = ?', Number(sid))).toEqual([
      { validated: 0 },
    ]);
    const stored = rows<{ state: string; context: string }>(
      first,
      'SELECT state, context FROM session_machines WHERE sid = ?',
      Number(sid),
    )[0]!;
    // The machine's value as it gives it: `locked` is one of the live states.
    expect(JSON.parse(stored.state)).toEqual({ live: 'locked' });
    expect(JSON.parse(stored.context)).toMatchObject({ wrongTokens: MAX_WRONG_TOKENS });

    // Stopped and started again on the same files: still void.
    await first.server.close();
    const again = await startTestServer({ dir: first.dir, clock: new ManualClock(Date.now()) });
    cleanups.push(() => again.server.close());
    const afterRestart = await submitSms(again, sid, secret, code);
    expect(afterRestart.status).toBe(400);
    expect(afterRestart.json['error']).toMatch(/^Too many incorrect tokens/);

    // The same send_attempt sends nothing; a higher one sends a new code, and only that one validates.
    expect(await requestSms(again, secret, '07700 900801', 1)).toBe(sid);
    expect(smsTo(msisdn)).toHaveLength(1);
    expect(await requestSms(again, secret, '07700 900801', 2)).toBe(sid);
    expect(smsTo(msisdn)).toHaveLength(2);
    const fresh = smsCode(smsTo(msisdn)[1]!);
    expect(fresh).not.toBe(code);
    const old = await submitSms(again, sid, secret, code);
    expect(old.status).toBe(400);
    expect(old.json).toMatchObject({ errcode: 'M_TOKEN_INCORRECT', error: 'The token is incorrect' });
    const ok = await submitSms(again, sid, secret, fresh);
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
  });
});

describe('wrong tokens per client address', () => {
  let t: TestServer;
  let clock: ManualClock;
  const BURST = 3;

  beforeAll(async () => {
    t = await startTestServer({
      conf: {
        email: emailConf(smtp.port),
        http: {
          obey_x_forwarded_for: 'true',
          trusted_proxies: '127.0.0.1',
          'submit_token.ratelimit.burst': String(BURST),
          'submit_token.ratelimit.rate_hz': String(1 / 60),
        },
      },
    });
    clock = t.clock as ManualClock;
  });
  afterAll(async () => {
    await t?.close();
  });

  let n = 0;
  /** A new email session from `from`, and its token. */
  async function emailSession(from: string): Promise<{ sid: string; secret: string; token: string }> {
    const secret = `perip${++n}`;
    const email = `perip${n}@example.org`;
    const res = await fetch(v1(t, '/validate/email/requestToken'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': from },
      body: JSON.stringify({ client_secret: secret, email, send_attempt: 1 }),
    });
    expect(res.status).toBe(200);
    const sid = ((await res.json()) as { sid: string }).sid;
    const mail = await smtp.waitForMessage((m) => m.to.includes(email));
    return { sid, secret, token: mailToken(mail) };
  }

  async function submit(from: string, body: Record<string, unknown>, medium = 'email') {
    const res = await fetch(v1(t, `/validate/${medium}/submitToken`), {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': from },
      body: JSON.stringify(body),
    });
    return { status: res.status, headers: res.headers, json: (await res.json()) as Record<string, unknown> };
  }

  it('counts wrong tokens and unknown sessions across sessions and endpoints, then answers 429 even for the right token', async () => {
    const a = await emailSession('192.0.2.1');
    const b = await emailSession('192.0.2.1');
    const wrongLink = await fetch(
      v1(t, `/validate/email/submitToken?sid=${b.sid}&client_secret=${b.secret}&token=wrong`),
      {
        headers: { 'x-forwarded-for': '192.0.2.1' },
      },
    );
    const wrongs = [
      (await submit('192.0.2.1', { sid: a.sid, client_secret: a.secret, token: 'wrong' })).status,
      wrongLink.status,
      (await submit('192.0.2.1', { sid: '999999', client_secret: 'nope', token: '123456' }, 'msisdn')).status,
    ];
    expect(wrongs).toEqual([400, 400, 400]);
    const limited = await submit('192.0.2.1', { sid: a.sid, client_secret: a.secret, token: a.token });
    expect(limited.status).toBe(429);
    expect(limited.json).toEqual({ errcode: 'M_LIMIT_EXCEEDED', error: expect.any(String), retry_after_ms: 60_000 });
    expect(limited.headers.get('retry-after')).toBe('60');
    // The link in the mail, from the same address: a page, 429.
    const page = await fetch(
      v1(t, `/validate/email/submitToken?sid=${a.sid}&client_secret=${a.secret}&token=${a.token}`),
      {
        headers: { 'x-forwarded-for': '192.0.2.1' },
        redirect: 'manual',
      },
    );
    expect(page.status).toBe(429);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(rows(t, 'SELECT validated FROM threepid_validation_sessions WHERE id = ?', Number(a.sid))).toEqual([
      { validated: 0 },
    ]);

    // Another client (another X-Forwarded-For from the trusted proxy) is not held back.
    const other = await submit('192.0.2.2', { sid: b.sid, client_secret: b.secret, token: b.token });
    expect(other.status).toBe(200);

    // A minute later one more attempt; the right token validates and costs nothing.
    clock.advance(60_000);
    const ok = await submit('192.0.2.1', { sid: a.sid, client_secret: a.secret, token: a.token });
    expect(ok.status).toBe(200);
    const again = await submit('192.0.2.1', { sid: a.sid, client_secret: a.secret, token: 'wrong' });
    expect(again.status).toBe(400);
    expect((await submit('192.0.2.1', { sid: a.sid, client_secret: a.secret, token: 'wrong' })).status).toBe(429);
  });

  it('right tokens never count: after many of them, the address still has its whole burst of wrong ones', async () => {
    const s = await emailSession('192.0.2.3');
    for (let i = 0; i < BURST * 3; i++) {
      const res = await submit('192.0.2.3', { sid: s.sid, client_secret: s.secret, token: s.token });
      expect(res.status, `attempt ${i}`).toBe(200);
    }
    const wrongs: number[] = [];
    for (let i = 0; i <= BURST; i++)
      wrongs.push((await submit('192.0.2.3', { sid: s.sid, client_secret: s.secret, token: 'wrong' })).status);
    expect(wrongs).toEqual([...Array.from({ length: BURST }, () => 400), 429]);
  });
});

describe('the client address of an untrusted proxy', () => {
  it('X-Forwarded-For from an address not in trusted_proxies does not make a new client', async () => {
    const t = await startTestServer({
      conf: {
        email: emailConf(smtp.port),
        http: { obey_x_forwarded_for: 'true', trusted_proxies: '192.0.2.200', 'submit_token.ratelimit.burst': '2' },
      },
    });
    cleanups.push(() => t.close());
    const statuses: number[] = [];
    for (const from of ['198.51.100.1', '198.51.100.2', '198.51.100.3']) {
      const res = await fetch(v1(t, '/validate/email/submitToken'), {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-forwarded-for': from },
        body: JSON.stringify({ sid: '4242', client_secret: 'nope', token: 'wrong' }),
      });
      statuses.push(res.status);
    }
    expect(statuses).toEqual([400, 400, 429]);
  });
});
