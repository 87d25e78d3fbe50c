/**
 * Phone number validation end to end on v1 with OpenMarket played by a loopback gateway: requestToken sends
 * one SMS (right originator, text and credentials), its code validates the session by POST and by GET (page,
 * or a redirect to next_link), getValidated3pid answers the MSISDN, and send_attempt is honoured.
 */
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { call, sessionOf, type Reply } from './helpers/email.js';
import { phoneRequest } from './helpers/msisdn.js';
import { openMarketForFile, testServerForFile } from './helpers/per-file.js';
import { loopbackAllowed, OM_CREDS, openMarketConf, smsCode, type ReceivedSms } from './helpers/sms-providers.js';

const om = openMarketForFile();
const clock = new ManualClock();
const t = testServerForFile(() => ({
  conf: {
    general: loopbackAllowed,
    sms: openMarketConf(om, {
      bodytemplate: 'Your Example code is {token}',
      'originators.44': 'long:447700900001, alpha:Matrix',
      'originators.33': 'long:33700000001, short:36111, alpha:ExampleFR',
      'originators.default': 'alpha:Example',
    }),
  },
  clock,
}));

const v1 = (p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const requestToken = (body: Record<string, unknown>, form = false): Promise<Reply> =>
  call(v1('/validate/msisdn/requestToken'), { body, form });
const submitToken = (body: Record<string, unknown>): Promise<Reply> =>
  call(v1('/validate/msisdn/submitToken'), { body });
const getValidated = (sid: string, secret: string): Promise<Reply> =>
  call(v1(`/3pid/getValidated3pid?sid=${encodeURIComponent(sid)}&client_secret=${encodeURIComponent(secret)}`));
const smsTo = (msisdn: string): ReceivedSms[] => om.messages.filter((m) => m.to === msisdn);

describe('requestToken', () => {
  it('answers {success, sid, msisdn, intl_fmt} and sends one SMS with the code, the originator and the credentials', async () => {
    const res = await requestToken(phoneRequest('smsflow1', 'GB', '07700 900750'));
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(Object.keys(res.json)).toEqual(['success', 'sid', 'msisdn', 'intl_fmt']);
    expect(res.json).toMatchObject({ success: true, msisdn: '447700900750', intl_fmt: '+44 7700 900750' });
    const sid = res.json['sid'] as string;
    expect(sid).toMatch(/^\d+$/);

    const sms = smsTo('447700900750');
    expect(sms).toHaveLength(1);
    // digit sum 43, two originators for +44: index 1
    expect(sms[0]).toMatchObject({
      from: 'Matrix',
      ton: 5,
      auth: { user: OM_CREDS.username, password: OM_CREDS.password },
    });
    expect(sms[0]!.body).toMatch(/^Your Example code is \d{6}$/);
    const code = smsCode(sms[0]!);

    // Sydent's rows: the MSISDN, not validated, the code sent, the send_attempt that sent it
    const rows = sessionOf(t.config.db.dbFile, sid);
    expect(rows.session).toMatchObject({
      medium: 'msisdn',
      address: '447700900750',
      clientSecret: 'smsflow1',
      validated: 0,
    });
    expect(rows.tokens).toEqual([expect.objectContaining({ token: code, sendAttemptNumber: 1 })]);

    const debug = await call(t.internalUrl(`/_sydent/debug/sessions/${sid}`));
    expect(debug.json).toMatchObject({ state: 'tokenSent', context: { medium: 'msisdn', address: '44…50' } });
  });

  it('chooses the originator by digit sum per country, then the default', async () => {
    // 447700900751: digit sum 44 → index 0 of two
    await requestToken({ client_secret: 'orig1', country: 'GB', phone_number: '+44 7700 900751', send_attempt: 1 });
    expect(smsTo('447700900751')[0]).toMatchObject({ from: '447700900001', ton: 1 });
    // 33612345678: digit sum 45 → index 0 of three; 33612345679: 46 → index 1; 33612345670: 37 → index 1
    await requestToken({ client_secret: 'orig2', country: 'FR', phone_number: '06 12 34 56 78', send_attempt: 1 });
    expect(smsTo('33612345678')[0]).toMatchObject({ from: '33700000001', ton: 1 });
    await requestToken({ client_secret: 'orig3', country: 'FR', phone_number: '06 12 34 56 79', send_attempt: 1 });
    expect(smsTo('33612345679')[0]).toMatchObject({ from: '36111', ton: 3 });
    await requestToken({ client_secret: 'orig4', country: 'FR', phone_number: '06 12 34 56 80', send_attempt: 1 });
    // 33612345680: 38 → index 2
    expect(smsTo('33612345680')[0]).toMatchObject({ from: 'ExampleFR', ton: 5 });
    // no originators.1: the default
    const us = await requestToken(phoneRequest('orig5', 'US', '(202) 555-0123'));
    expect(us.json).toMatchObject({ msisdn: '12025550123', intl_fmt: '+1 202-555-0123' });
    expect(smsTo('12025550123')[0]).toMatchObject({ from: 'Example', ton: 5 });
  });

  it('takes form bodies on v1 (send_attempt as a string)', async () => {
    const res = await requestToken(
      { client_secret: 'formsms', country: 'gb', phone_number: '07700900752', send_attempt: '1' },
      true,
    );
    expect(res.status, res.text).toBe(200);
    expect(res.json['msisdn']).toBe('447700900752');
    expect(smsTo('447700900752')).toHaveLength(1);
  });

  it('send_attempt: the same one again sends nothing and answers the same sid; a higher one sends the same code again', async () => {
    const body = { client_secret: 'attempts', country: 'GB', phone_number: '07700 900753', send_attempt: 3 };
    const first = await requestToken(body);
    const again = await requestToken(body);
    const lower = await requestToken({ ...body, send_attempt: 2 });
    for (const r of [again, lower]) {
      expect(r.status, r.text).toBe(200);
      expect(r.json).toEqual(first.json);
    }
    expect(smsTo('447700900753')).toHaveLength(1);
    const higher = await requestToken({ ...body, send_attempt: 4 });
    expect(higher.json['sid']).toBe(first.json['sid']);
    const sent = smsTo('447700900753');
    expect(sent).toHaveLength(2);
    expect(smsCode(sent[1]!)).toBe(smsCode(sent[0]!));
    // the same number written another way is the same session
    const other = await requestToken({ ...body, phone_number: '+447700900753', country: 'FR', send_attempt: 4 });
    expect(other.json['sid']).toBe(first.json['sid']);
    expect(smsTo('447700900753')).toHaveLength(2);
  });
});

describe('submitToken', () => {
  async function session(phone: string, secret: string, extra: Record<string, unknown> = {}) {
    const res = await requestToken({
      client_secret: secret,
      country: 'GB',
      phone_number: phone,
      send_attempt: 1,
      ...extra,
    });
    expect(res.status, res.text).toBe(200);
    const msisdn = res.json['msisdn'] as string;
    return { sid: res.json['sid'] as string, code: smsCode(smsTo(msisdn).at(-1)!), msisdn };
  }

  it('POST with the code from the SMS validates; getValidated3pid answers the MSISDN', async () => {
    const { sid, code } = await session('07700 900760', 'postsecret');
    const early = await getValidated(sid, 'postsecret');
    expect(early.status).toBe(400);
    expect(early.json['errcode']).toBe('M_SESSION_NOT_VALIDATED');

    const wrong = await submitToken({
      sid,
      client_secret: 'postsecret',
      token: code === '000000' ? '000001' : '000000',
    });
    expect(wrong.status).toBe(400);
    expect(wrong.json).toMatchObject({ errcode: 'M_TOKEN_INCORRECT', success: false });
    const badSecret = await submitToken({ sid, client_secret: 'othersecret', token: code });
    expect(badSecret.status).toBe(400);
    expect(badSecret.json).toMatchObject({ errcode: 'M_INVALID_PARAM', success: false });

    clock.advance(30_000);
    const validatedAt = clock.now();
    const ok = await submitToken({ sid, client_secret: 'postsecret', token: code });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
    expect(sessionOf(t.config.db.dbFile, sid).session?.validated).toBe(1);

    const validated = await getValidated(sid, 'postsecret');
    expect(validated.status, validated.text).toBe(200);
    expect(validated.json).toEqual({ medium: 'msisdn', address: '447700900760', validated_at: validatedAt });
    // the sid as a JSON number, and again: still success
    expect((await submitToken({ sid: Number(sid), client_secret: 'postsecret', token: code })).json).toEqual({
      success: true,
    });
  });

  it('GET with the code answers the page; with a next_link given at requestToken, a 302 to it with the sid', async () => {
    const a = await session('07700 900761', 'getsecret');
    const bad = await call(v1(`/validate/msisdn/submitToken?sid=${a.sid}&client_secret=getsecret&token=999999x`));
    expect(bad.status).toBe(400);
    expect(bad.headers.get('content-type')).toMatch(/^text\/html/);
    expect(bad.text).toContain('Verification failed: you may need to request another verification text');

    const page = await call(v1(`/validate/msisdn/submitToken?sid=${a.sid}&client_secret=getsecret&token=${a.code}`));
    expect(page.status, page.text).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.text).toContain('Verification successful! Please return to your Matrix client to continue.');
    expect((await getValidated(a.sid, 'getsecret')).json).toMatchObject({ medium: 'msisdn', address: '447700900761' });

    const next = 'https://client.example.org/done?x=1';
    const b = await session('07700 900762', 'getsecret2', { next_link: next });
    // a next_link in the URL is not used: only the one given at requestToken
    const redirect = await call(
      t.url(
        `/_matrix/identity/v2/validate/msisdn/submitToken?sid=${b.sid}&client_secret=getsecret2&token=${b.code}&next_link=https://evil.example`,
      ),
    );
    expect(redirect.status).toBe(302);
    expect(redirect.headers.get('location')).toBe(`${next}&sid=${b.sid}`);
    expect((await getValidated(b.sid, 'getsecret2')).json).toMatchObject({ medium: 'msisdn', address: '447700900762' });

    const missing = await call(v1(`/validate/msisdn/submitToken?sid=${b.sid}`));
    expect(missing.status).toBe(400);
    expect(missing.text).toContain('request another verification text');
  });

  it('an expired session refuses the code; a new requestToken revives it with a new code', async () => {
    const { sid, code } = await session('07700 900763', 'expiring');
    clock.advance(24 * 60 * 60 * 1000 + 1000);
    const late = await submitToken({ sid, client_secret: 'expiring', token: code });
    expect(late.status).toBe(400);
    expect(late.json['errcode']).toBe('M_SESSION_EXPIRED');
    const again = await requestToken(phoneRequest('expiring', 'GB', '07700900763'));
    expect(again.json['sid']).toBe(sid);
    const fresh = smsCode(smsTo('447700900763').at(-1)!);
    expect(smsTo('447700900763')).toHaveLength(2);
    expect((await submitToken({ sid, client_secret: 'expiring', token: fresh })).json).toEqual({ success: true });
  });
});
