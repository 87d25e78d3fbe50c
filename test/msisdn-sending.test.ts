/**
 * Sending SMS when things go wrong: a provider failure is 500 M_SEND_ERROR with the session in sendFailed, and a
 * higher send_attempt tries again on the same sid; the per-number and per-country limits (shared by v1 and v2)
 * answer 429 M_LIMIT_EXCEEDED with retry_after_ms and send nothing; ip.blacklist keeps the provider off limits.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { call, sessionOf, sessionRows, tokenRows, type Reply } from './helpers/email.js';
import { rows } from './helpers/rows.js';
import { mergeConf } from './helpers/federation-env.js';
import { registerAccount } from './helpers/flows.js';
import { phoneRequest } from './helpers/msisdn.js';
import { federationEnvForFile, openMarketForFile, testServerForFile } from './helpers/per-file.js';
import { startTestServer } from './helpers/server.js';
import { loopbackAllowed, openMarketConf, smsCode } from './helpers/sms-providers.js';

const HOUR = 3600_000;

const om = openMarketForFile();
const env = federationEnvForFile();
const clock = new ManualClock();
const t = testServerForFile(() => ({
  conf: mergeConf(env.conf, {
    general: loopbackAllowed,
    // a provider that never answers is given up on at this deadline, before the provider timeout of 15 s
    http: { send_deadline_seconds: '4' },
    sms: openMarketConf(om, {
      'msisdn.ratelimit.burst': '2',
      'msisdn.ratelimit.rate_hz': String(1 / 3600),
      'country.ratelimit.burst': '3',
      'country.ratelimit.rate_hz': String(1 / 60),
    }),
  }),
  clock,
}));
/** servers a test started beside `t`: closed before it */
const started: { close(): Promise<void> }[] = [];
afterAll(async () => {
  for (const s of started) await s.close();
});

const v1 = (p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const v2 = (p: string) => t.url(`/_matrix/identity/v2${p}`);
const requestToken = (body: Record<string, unknown>, token?: string): Promise<Reply> =>
  call((token ? v2 : v1)('/validate/msisdn/requestToken'), { body, token });
const smsTo = (msisdn: string) => om.messages.filter((m) => m.to === msisdn);
const debugSession = async (sid: unknown) => (await call(t.internalUrl(`/_sydent/debug/sessions/${String(sid)}`))).json;

describe('provider failures', () => {
  it('500 from the provider: 500 M_SEND_ERROR, session sendFailed; the same send_attempt tries again, and with the provider back a higher one sends on the same sid', async () => {
    const body = { client_secret: 'failing', country: 'DE', phone_number: '030 123456', send_attempt: 1 };
    om.failWith = { status: 500, json: { error: 'Service temporarily unavailable' } };
    let failed: Reply;
    let again: Reply;
    const requestsBefore = om.requests.length;
    try {
      failed = await requestToken(body);
      expect(failed.status, failed.text).toBe(500);
      expect(failed.json).toEqual({ errcode: 'M_SEND_ERROR', error: 'Failed to send SMS' });
      expect(om.requests.length).toBe(requestsBefore + 1);

      const found = rows<{ id: number; address: string; validated: number }>(
        t.config.db.dbFile,
        "SELECT * FROM threepid_validation_sessions WHERE address = '4930123456'",
      );
      expect(found).toHaveLength(1);
      const sid = found[0]!.id;
      const debug = await debugSession(sid);
      expect(debug).toMatchObject({ state: 'sendFailed', context: { rejection: 'sendFailed' } });
      expect(String((debug['context'] as Record<string, unknown>)['lastError'])).toMatch(
        /^OpenMarket API responded with status 500 \(request ID: none\): Service temporarily unavailable$/,
      );

      // the same send_attempt: a failed send is not a send, so the provider is asked again (and fails again)
      again = await requestToken(body);
      expect(again.status).toBe(500);
      expect(again.json['errcode']).toBe('M_SEND_ERROR');
      expect(om.requests.length).toBe(requestsBefore + 2);
      // an older one is refused with the failure, without asking the provider
      const older = await requestToken({ ...body, send_attempt: 0 });
      expect(older.status).toBe(500);
      expect(older.json['errcode']).toBe('M_SEND_ERROR');
      expect(om.requests.length).toBe(requestsBefore + 2);
    } finally {
      om.failWith = null;
    }

    // each try was a send for the per-number limit (burst 2 here): an hour later there is room again
    clock.advance(HOUR);
    const retried = await requestToken({ ...body, send_attempt: 2 });
    expect(retried.status, retried.text).toBe(200);
    expect(retried.json).toMatchObject({ success: true, msisdn: '4930123456', intl_fmt: '+49 30 123456' });
    const sid = retried.json['sid'] as string;
    expect((await debugSession(sid))['state']).toBe('tokenSent');
    expect(sessionRows(t.config.db.dbFile).filter((r) => r.address === '4930123456')).toHaveLength(1);
    expect(tokenRows(t.config.db.dbFile).find((r) => r.validationSession === Number(sid))?.sendAttemptNumber).toBe(2);
    const sms = smsTo('4930123456');
    expect(sms).toHaveLength(1);
    const ok = await call(v1('/validate/msisdn/submitToken'), {
      body: { sid, client_secret: 'failing', token: smsCode(sms[0]!) },
    });
    expect(ok.json).toEqual({ success: true });
  });

  it('wrong credentials (401 from the provider) are a send error too', async () => {
    const bad = await startTestServer({
      conf: { general: loopbackAllowed, sms: openMarketConf(om, { password: 'wrong' }) },
    });
    started.push(bad);
    const res = await call(bad.url('/_matrix/identity/api/v1/validate/msisdn/requestToken'), {
      body: { client_secret: 'badcreds', country: 'GB', phone_number: '07700 900799', send_attempt: 1 },
    });
    expect(res.status).toBe(500);
    expect(res.json['errcode']).toBe('M_SEND_ERROR');
    expect(smsTo('447700900799')).toHaveLength(0);
  });

  it("a provider that never answers: 500 M_SEND_ERROR (the spec's code), and once it answers the same send_attempt sends", async () => {
    // a country of its own, so the limits the other tests count are not touched
    const body = { client_secret: 'hanging', country: 'NL', phone_number: '020 123 4567', send_attempt: 1 };
    om.hang = true;
    let failed: Reply;
    try {
      failed = await requestToken(body);
    } finally {
      om.hang = false;
    }
    expect(failed.status, failed.text).toBe(500);
    expect(failed.json).toEqual({ errcode: 'M_SEND_ERROR', error: 'Failed to send SMS' });
    expect(smsTo('31201234567')).toHaveLength(0);

    const same = await requestToken(body);
    expect(same.status, same.text).toBe(200);
    const sms = smsTo('31201234567');
    expect(sms).toHaveLength(1);
    const ok = await call(v1('/validate/msisdn/submitToken'), {
      body: { sid: same.json['sid'], client_secret: 'hanging', token: smsCode(sms[0]!) },
    });
    expect(ok.json).toEqual({ success: true });
  }, 30_000);

  it('ip.blacklist: a provider on a blacklisted address is never contacted', async () => {
    const fenced = await startTestServer({ conf: { sms: openMarketConf(om) } });
    started.push(fenced);
    const before = om.requests.length;
    const res = await call(fenced.url('/_matrix/identity/api/v1/validate/msisdn/requestToken'), {
      body: { client_secret: 'fenced', country: 'GB', phone_number: '07700 900798', send_attempt: 1 },
    });
    expect(res.status).toBe(500);
    expect(res.json['errcode']).toBe('M_SEND_ERROR');
    expect(om.requests.length).toBe(before);
    const sid = sessionRows(fenced.config.db.dbFile)[0]!.id;
    const debug = (await call(fenced.internalUrl(`/_sydent/debug/sessions/${sid}`))).json;
    expect(debug['state']).toBe('sendFailed');
    expect(String((debug['context'] as Record<string, unknown>)['lastError'])).toMatch(/refused by ip\.blacklist/);
  });
});

describe('rate limits', () => {
  it('per number: 429 M_LIMIT_EXCEEDED with retry_after_ms, nothing sent, no new session; free again later', async () => {
    const body = { client_secret: 'limited', country: 'GB', phone_number: '07700 900900', send_attempt: 1 };
    expect((await requestToken(body)).status).toBe(200);
    expect((await requestToken({ ...body, send_attempt: 2 })).status).toBe(200);
    expect(smsTo('447700900900')).toHaveLength(2);
    const sessionsBefore = sessionRows(t.config.db.dbFile);
    const tokensBefore = tokenRows(t.config.db.dbFile);

    const limited = await requestToken({ ...body, send_attempt: 3 });
    expect(limited.status, limited.text).toBe(429);
    expect(limited.json['errcode']).toBe('M_LIMIT_EXCEEDED');
    expect(limited.json['retry_after_ms']).toBe(HOUR);
    expect(limited.headers.get('retry-after')).toBe('3600');
    // another client secret (a new session) for the same number: refused before anything is stored
    const other = await requestToken({ ...body, client_secret: 'limited2' });
    expect(other.status).toBe(429);
    expect(smsTo('447700900900')).toHaveLength(2);
    expect(sessionRows(t.config.db.dbFile)).toEqual(sessionsBefore);
    expect(tokenRows(t.config.db.dbFile)).toEqual(tokensBefore);

    // a repeated send_attempt sends nothing, so no limit applies
    const repeat = await requestToken({ ...body, send_attempt: 2 });
    expect(repeat.status, repeat.text).toBe(200);

    clock.advance(HOUR / 2);
    const sooner = await requestToken({ ...body, send_attempt: 3 });
    expect(sooner.json['retry_after_ms']).toBe(HOUR / 2);
    clock.advance(HOUR / 2);
    const later = await requestToken({ ...body, send_attempt: 3 });
    expect(later.status, later.text).toBe(200);
    expect(smsTo('447700900900')).toHaveLength(3);
  });

  it('per country: 429 once the country code has had its burst, other countries unaffected', async () => {
    const fr = ['06 12 34 56 01', '06 12 34 56 02', '06 12 34 56 03'];
    for (const [i, phone_number] of fr.entries()) {
      const res = await requestToken(phoneRequest(`fr${i}`, 'FR', phone_number));
      expect(res.status, res.text).toBe(200);
    }
    const before = { sessions: sessionRows(t.config.db.dbFile).length, requests: om.requests.length };
    const limited = await requestToken(phoneRequest('fr9', 'FR', '06 12 34 56 09'));
    expect(limited.status, limited.text).toBe(429);
    expect(limited.json).toMatchObject({ errcode: 'M_LIMIT_EXCEEDED', retry_after_ms: 60_000 });
    // written from another country, the same calling code
    const viaPlus = await requestToken(phoneRequest('fr10', 'GB', '+33 6 12 34 56 10'));
    expect(viaPlus.status).toBe(429);
    expect({ sessions: sessionRows(t.config.db.dbFile).length, requests: om.requests.length }).toEqual(before);
    const es = await requestToken(phoneRequest('es1', 'ES', '612 34 56 78'));
    expect(es.status, es.text).toBe(200);
    clock.advance(60_000);
    expect((await requestToken(phoneRequest('fr9', 'FR', '06 12 34 56 09'))).status).toBe(200);
  });

  it('v1 and v2 share one limiter per number', async () => {
    const token = await registerAccount(t, env, 'smsuser');
    const body = { client_secret: 'shared', country: 'IE', phone_number: '085 123 4567', send_attempt: 1 };
    const first = await requestToken(body, token);
    expect(first.status, first.text).toBe(200);
    expect(first.json).toMatchObject({ success: true, msisdn: '353851234567' });
    expect((await requestToken({ ...body, client_secret: 'shared-v1' })).status).toBe(200);
    const third = await requestToken({ ...body, send_attempt: 2 }, token);
    expect(third.status).toBe(429);
    expect(third.json['errcode']).toBe('M_LIMIT_EXCEEDED');
    expect(smsTo('353851234567')).toHaveLength(2);

    // the v2 flow: POST submitToken with the token, getValidated3pid with the token
    const sid = first.json['sid'] as string;
    const code = smsCode(smsTo('353851234567')[0]!);
    const submit = await call(v2('/validate/msisdn/submitToken'), {
      body: { sid, client_secret: 'shared', token: code },
      token,
    });
    expect(submit.json).toEqual({ success: true });
    const got = await call(v2(`/3pid/getValidated3pid?sid=${sid}&client_secret=shared`), { token });
    expect(got.json).toMatchObject({ medium: 'msisdn', address: '353851234567' });
    expect(sessionOf(t.config.db.dbFile, sid).session?.validated).toBe(1);
  });
});
