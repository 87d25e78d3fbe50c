/**
 * Phone number validation with `provider = twilio`, against a loopback gateway speaking Twilio's Messages API:
 * the SMS arrives with To, From (the originator) and Body and the account's credentials; its code validates the
 * session by POST and by GET; Twilio's errors are 500 M_SEND_ERROR.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, type Reply } from './helpers/email.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import {
  loopbackAllowed,
  smsCode,
  startTwilio,
  TWILIO_CREDS,
  twilioConf,
  type FakeSmsGateway,
} from './helpers/sms-providers.js';

let tw: FakeSmsGateway;
let t: TestServer;

beforeAll(async () => {
  tw = await startTwilio(TWILIO_CREDS);
  t = await startTestServer({
    conf: {
      general: loopbackAllowed,
      sms: twilioConf(tw, {
        bodytemplate: 'Code {token} for Example',
        'originators.44': 'long:447700900001, alpha:Example',
      }),
    },
  });
});
afterAll(async () => {
  await t?.close();
  await tw?.close();
});

const v1 = (p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const requestToken = (body: Record<string, unknown>): Promise<Reply> =>
  call(v1('/validate/msisdn/requestToken'), { body });
const smsTo = (msisdn: string) => tw.messages.filter((m) => m.to === `+${msisdn}`);

describe('Twilio', () => {
  it('sends To/From/Body with the account credentials; the code validates by POST; getValidated3pid answers', async () => {
    const res = await requestToken({
      client_secret: 'twpost',
      country: 'GB',
      phone_number: '07700 900750',
      send_attempt: 1,
    });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toMatchObject({ success: true, msisdn: '447700900750', intl_fmt: '+44 7700 900750' });
    const sms = smsTo('447700900750');
    expect(sms).toHaveLength(1);
    // digit sum 43 of two originators → the alpha one
    expect(sms[0]).toMatchObject({
      from: 'Example',
      auth: { user: TWILIO_CREDS.accountSid, password: TWILIO_CREDS.authToken },
    });
    expect(sms[0]!.request.url).toBe(`/2010-04-01/Accounts/${TWILIO_CREDS.accountSid}/Messages.json`);
    expect(sms[0]!.body).toMatch(/^Code \d{6} for Example$/);

    const sid = res.json['sid'] as string;
    const ok = await call(v1('/validate/msisdn/submitToken'), {
      body: { sid, client_secret: 'twpost', token: smsCode(sms[0]!) },
    });
    expect(ok.json).toEqual({ success: true });
    const got = await call(v1(`/3pid/getValidated3pid?sid=${sid}&client_secret=twpost`));
    expect(got.status).toBe(200);
    expect(got.json).toEqual({ medium: 'msisdn', address: '447700900750', validated_at: expect.any(Number) });
  });

  it('a long-number originator is sent as +E.164; the code validates by GET with a redirect to next_link', async () => {
    const res = await requestToken({
      client_secret: 'twget',
      country: 'GB',
      phone_number: '07700 900751',
      send_attempt: 1,
      next_link: 'https://client.example.org/after',
    });
    expect(res.status, res.text).toBe(200);
    const sms = smsTo('447700900751');
    expect(sms[0]).toMatchObject({ from: '+447700900001' });
    const page = await call(
      v1(`/validate/msisdn/submitToken?sid=${String(res.json['sid'])}&client_secret=twget&token=${smsCode(sms[0]!)}`),
    );
    expect(page.status).toBe(302);
    expect(page.headers.get('location')).toBe(`https://client.example.org/after?sid=${String(res.json['sid'])}`);
    expect(page.text).toContain('Verification successful');
  });

  it("Twilio's errors are 500 M_SEND_ERROR; the session shows why; a higher send_attempt tries again", async () => {
    tw.failWith = {
      status: 400,
      json: { code: 21408, message: 'Permission to send an SMS has not been enabled for the region', status: 400 },
    };
    try {
      const res = await requestToken({
        client_secret: 'twfail',
        country: 'GB',
        phone_number: '07700 900752',
        send_attempt: 1,
      });
      expect(res.status).toBe(500);
      expect(res.json).toEqual({ errcode: 'M_SEND_ERROR', error: 'Failed to send SMS' });
      const rows = await call(t.internalUrl('/_sydent/debug/sessions'));
      expect((rows.json['byState'] as Record<string, number>)['sendFailed']).toBe(1);
    } finally {
      tw.failWith = null;
    }
    const retried = await requestToken({
      client_secret: 'twfail',
      country: 'GB',
      phone_number: '07700 900752',
      send_attempt: 2,
    });
    expect(retried.status, retried.text).toBe(200);
    const sid = retried.json['sid'] as string;
    const debug = await call(t.internalUrl(`/_sydent/debug/sessions/${sid}`));
    const transitions = debug.json['transitions'] as { to: string }[];
    expect(transitions.map((x) => x.to)).toContain('sendFailed');
    expect(debug.json['state']).toBe('tokenSent');
    expect(smsTo('447700900752')).toHaveLength(1);
  });
});
