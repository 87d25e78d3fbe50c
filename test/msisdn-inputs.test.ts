/**
 * Bad inputs on the msisdn endpoints: each is refused with the exact status and errcode, and leaves no trace
 * (no session row, no token row, no SMS). Rejected countries (smsrule) likewise, and v2 needs a token.
 */
import { describe, expect, it } from 'vitest';
import { call, sessionsAndTokens, type Reply } from './helpers/email.js';
import { openMarketForFile, testServerForFile } from './helpers/per-file.js';
import { loopbackAllowed, openMarketConf, smsCode } from './helpers/sms-providers.js';

const om = openMarketForFile();
const t = testServerForFile(() => ({
  conf: { general: loopbackAllowed, sms: openMarketConf(om, { 'smsrule.1': 'reject', 'smsrule.44': 'allow' }) },
}));

const v1 = (p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const v2 = (p: string) => t.url(`/_matrix/identity/v2${p}`);
const requestToken = (body: unknown, form = false) => call(v1('/validate/msisdn/requestToken'), { body, form });
const submitToken = (body: unknown) => call(v1('/validate/msisdn/submitToken'), { body });

function state() {
  return { ...sessionsAndTokens(t.config.db.dbFile), requests: om.requests.length };
}

async function refused(
  what: string,
  send: () => Promise<Reply>,
  expected: { status?: number; errcode: string; error?: string | RegExp },
): Promise<Reply> {
  const before = state();
  const res = await send();
  expect(res.status, `${what}: ${res.text}`).toBe(expected.status ?? 400);
  expect(res.headers.get('content-type'), what).toMatch(/^application\/json/);
  expect(res.json['errcode'], `${what}: ${res.text}`).toBe(expected.errcode);
  expect(typeof res.json['error'], what).toBe('string');
  if (typeof expected.error === 'string') expect(res.json['error'], what).toBe(expected.error);
  else if (expected.error) expect(res.json['error'], what).toMatch(expected.error);
  expect(state(), `${what}: nothing stored, nothing sent`).toEqual(before);
  return res;
}

const good = { client_secret: 'inputsecret', country: 'GB', phone_number: '07700 900750', send_attempt: 1 };
const without = (key: string): Record<string, unknown> => {
  const copy: Record<string, unknown> = { ...good };
  delete copy[key];
  return copy;
};

describe('POST requestToken', () => {
  it('missing fields: 400 M_MISSING_PARAMS naming them', async () => {
    for (const key of ['client_secret', 'country', 'phone_number', 'send_attempt']) {
      await refused(`without ${key}`, () => requestToken(without(key)), {
        errcode: 'M_MISSING_PARAMS',
        error: `Missing parameters: ${key}`,
      });
    }
    const all = await refused('empty object', () => requestToken({}), { errcode: 'M_MISSING_PARAMS' });
    expect(
      String(all.json['error'])
        .replace(/^Missing parameters: /, '')
        .split(',')
        .sort(),
    ).toEqual(['client_secret', 'country', 'phone_number', 'send_attempt']);
    await refused(
      'form without country',
      () => requestToken({ client_secret: 's', phone_number: '07700900750', send_attempt: '1' }, true),
      {
        errcode: 'M_MISSING_PARAMS',
        error: 'Missing parameters: country',
      },
    );
  });

  it('bad client_secret, send_attempt, country, next_link: 400 M_INVALID_PARAM', async () => {
    for (const secret of ['', 'has space', 'a/b', 'x'.repeat(256), 'é']) {
      await refused(`client_secret ${JSON.stringify(secret)}`, () => requestToken({ ...good, client_secret: secret }), {
        errcode: 'M_INVALID_PARAM',
        error: 'Invalid client_secret provided',
      });
    }
    for (const attempt of ['x', 1.5, '1.5', null, true, [], {}]) {
      await refused(`send_attempt ${JSON.stringify(attempt)}`, () => requestToken({ ...good, send_attempt: attempt }), {
        errcode: 'M_INVALID_PARAM',
        error: /^send_attempt should be an integer/,
      });
    }
    for (const country of ['', 'G', 'GBR', '44', 'G1']) {
      await refused(`country ${JSON.stringify(country)}`, () => requestToken({ ...good, country }), {
        errcode: 'M_INVALID_PARAM',
        error: /^Invalid country provided/,
      });
    }
    // the wording of fastify's body schema, which the route's own checks keep
    await refused('country as a number', () => requestToken({ ...good, country: 44 }), {
      errcode: 'M_INVALID_PARAM',
      error: 'country must be string',
    });
    await refused('phone_number as a number', () => requestToken({ ...good, phone_number: 7700900750 }), {
      errcode: 'M_INVALID_PARAM',
      error: 'phone_number must be string',
    });
    await refused('phone_number as a number', () => requestToken({ ...good, phone_number: 447700900750 }), {
      errcode: 'M_INVALID_PARAM',
    });
    await refused(
      'phone_number over 50 characters',
      () => requestToken({ ...good, phone_number: `07700 900750${' '.repeat(40)}` }),
      {
        errcode: 'M_INVALID_PARAM',
        error: 'Invalid phone_number provided',
      },
    );
    for (const link of ['file:///etc/passwd', 'javascript:alert(1)', 'not a url', 42]) {
      await refused(`next_link ${JSON.stringify(link)}`, () => requestToken({ ...good, next_link: link }), {
        errcode: 'M_INVALID_PARAM',
      });
    }
  });

  it('not a phone number: 400 M_INVALID_ADDRESS', async () => {
    const cases: [string, string, string][] = [
      ['letters', 'abcdefgh', 'GB'],
      ['empty', '', 'GB'],
      ['too short', '12', 'GB'],
      ['too short for +44', '+44 1234', 'GB'],
      ['impossible length', '077009007501234', 'GB'],
      ['unknown calling code', '+999 123456', 'GB'],
      ['no country code (unknown country, no +)', '07700900750', 'ZZ'],
    ];
    for (const [what, phone_number, country] of cases) {
      await refused(what, () => requestToken({ ...good, phone_number, country }), {
        errcode: 'M_INVALID_ADDRESS',
        error: 'Invalid phone number',
      });
    }
  });

  it('a rejected country: 400 M_DESTINATION_REJECTED; an allowed one is sent', async () => {
    for (const [phone_number, country] of [
      ['(202) 555-0123', 'US'],
      ['+1 202 555 0123', 'GB'],
      ['+1 416 555 0123', 'CA'],
    ] as const) {
      await refused(`${phone_number} from ${country}`, () => requestToken({ ...good, phone_number, country }), {
        errcode: 'M_DESTINATION_REJECTED',
        error: 'Phone numbers in this country are not currently supported',
      });
    }
    const ok = await requestToken(good);
    expect(ok.status, ok.text).toBe(200);
    expect(om.messages.filter((m) => m.to === '447700900750')).toHaveLength(1);
  });

  it('bodies that are not JSON objects', async () => {
    await refused('invalid JSON', () => call(v1('/validate/msisdn/requestToken'), { body: '{"country":' }), {
      errcode: 'M_NOT_JSON',
    });
    await refused('a JSON array', () => call(v1('/validate/msisdn/requestToken'), { body: '[]' }), {
      errcode: 'M_NOT_JSON',
    });
  });
});

describe('POST submitToken', () => {
  it('missing fields and malformed values', async () => {
    await refused('empty', () => submitToken({}), { errcode: 'M_MISSING_PARAMS' });
    await refused('bad secret', () => submitToken({ sid: '1', client_secret: 'a b', token: '123456' }), {
      errcode: 'M_INVALID_PARAM',
      error: 'Invalid client_secret provided',
    });
    await refused('bad sid', () => submitToken({ sid: 'a b', client_secret: 'ok', token: '123456' }), {
      errcode: 'M_INVALID_PARAM',
    });
    const unknown = await refused(
      'unknown sid',
      () => submitToken({ sid: '999999', client_secret: 'ok', token: '123456' }),
      {
        errcode: 'M_INVALID_PARAM',
      },
    );
    expect(unknown.json['success']).toBe(false);
  });
});

describe('v2', () => {
  it('requestToken, POST submitToken and getValidated3pid need an access token (401 M_UNAUTHORIZED), and store nothing', async () => {
    await refused(
      'v2 requestToken',
      () => call(v2('/validate/msisdn/requestToken'), { body: { ...good, client_secret: 'v2secret' } }),
      {
        status: 401,
        errcode: 'M_UNAUTHORIZED',
      },
    );
    await refused(
      'v2 requestToken with an unknown token',
      () => call(v2('/validate/msisdn/requestToken'), { body: { ...good, client_secret: 'v2secret' }, token: 'nope' }),
      { status: 401, errcode: 'M_UNAUTHORIZED' },
    );
    await refused(
      'v2 submitToken',
      () => call(v2('/validate/msisdn/submitToken'), { body: { sid: '1', client_secret: 'x', token: '123456' } }),
      {
        status: 401,
        errcode: 'M_UNAUTHORIZED',
      },
    );
  });

  it('the GET submitToken needs no token', async () => {
    const res = await requestToken({ ...good, client_secret: 'getv2', phone_number: '07700 900751' });
    const code = smsCode(om.messages.filter((m) => m.to === '447700900751').at(-1)!);
    const page = await call(
      v2(`/validate/msisdn/submitToken?sid=${String(res.json['sid'])}&client_secret=getv2&token=${code}`),
    );
    expect(page.status, page.text).toBe(200);
    expect(page.text).toContain('Verification successful');
  });
});
