/**
 * Bad inputs on the email validation endpoints (v1): each one is refused with the right status and errcode,
 * and leaves no trace: no session row, no token row, no change to an existing session, no mail.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { call, emailConf, mailToken, sessionsAndTokens, type Reply } from './helpers/email.js';
import { smtpServerForFile, testServerForFile } from './helpers/per-file.js';

const smtp = smtpServerForFile();
const t = testServerForFile(() => ({ conf: { email: emailConf(smtp.port) } }));

const v1 = (p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const requestToken = (body: unknown) => call(v1('/validate/email/requestToken'), { body });
const submitToken = (body: unknown) => call(v1('/validate/email/submitToken'), { body });
const getValidated = (q: string) => call(v1(`/3pid/getValidated3pid${q}`));

/** Everything a refused request must leave as it was. */
function state() {
  return { ...sessionsAndTokens(t.config.db.dbFile), mails: smtp.messages.length };
}

/** Runs `send`, expects the refusal, and checks nothing was stored or sent. */
async function refused(
  what: string,
  send: () => Promise<Reply>,
  expected: { status?: number; errcode: string | string[]; error?: string | RegExp },
): Promise<Reply> {
  const before = state();
  const res = await send();
  expect(res.status, `${what}: ${res.text}`).toBe(expected.status ?? 400);
  expect(res.headers.get('content-type'), what).toMatch(/^application\/json/);
  const codes = Array.isArray(expected.errcode) ? expected.errcode : [expected.errcode];
  expect(codes, `${what}: ${res.text}`).toContain(res.json['errcode']);
  expect(typeof res.json['error'], what).toBe('string');
  if (typeof expected.error === 'string') expect(res.json['error'], what).toBe(expected.error);
  else if (expected.error) expect(res.json['error'], what).toMatch(expected.error);
  expect(state(), `${what}: nothing stored, nothing sent`).toEqual(before);
  return res;
}

const good = { client_secret: 'inputsecret', email: 'valid.user@example.org', send_attempt: 1 };
const without = (key: string): Record<string, unknown> => {
  const copy: Record<string, unknown> = { ...good };
  delete copy[key];
  return copy;
};

describe('POST requestToken', () => {
  it('missing fields: 400 M_MISSING_PARAMS naming the field', async () => {
    for (const key of ['client_secret', 'email', 'send_attempt']) {
      await refused(`without ${key}`, () => requestToken(without(key)), {
        errcode: 'M_MISSING_PARAMS',
        error: `Missing parameters: ${key}`,
      });
    }
    await refused('empty object', () => requestToken({}), {
      errcode: 'M_MISSING_PARAMS',
      error: /^Missing parameters: /,
    });
  });

  it('names every missing parameter, comma-separated as Sydent does (Missing parameters: a,b,c)', async () => {
    const res = await refused('empty object', () => requestToken({}), { errcode: 'M_MISSING_PARAMS' });
    const names = String(res.json['error'])
      .replace(/^Missing parameters: /, '')
      .split(',');
    expect(names.sort()).toEqual(['client_secret', 'email', 'send_attempt']);
    const two = await refused('email only', () => requestToken({ email: 'a@example.org' }), {
      errcode: 'M_MISSING_PARAMS',
    });
    expect(
      String(two.json['error'])
        .replace(/^Missing parameters: /, '')
        .split(',')
        .sort(),
    ).toEqual(['client_secret', 'send_attempt']);
  });

  it('a body that is not a JSON object: 400 M_NOT_JSON', async () => {
    for (const body of ['not json', '[]', 'null', '"a string"', '{"client_secret": "x",']) {
      await refused(`body ${body}`, () => requestToken(body), { errcode: 'M_NOT_JSON' });
    }
  });

  it('mistyped fields: 400 M_INVALID_PARAM', async () => {
    const cases: [string, Record<string, unknown>][] = [
      ['email as a number', { ...good, email: 42 }],
      ['email as null', { ...good, email: null }],
      ['email as a list', { ...good, email: ['valid.user@example.org'] }],
      ['email as an object', { ...good, email: { address: 'valid.user@example.org' } }],
      ['client_secret as an object', { ...good, client_secret: { a: 1 } }],
      ['client_secret as a number', { ...good, client_secret: 12345 }],
      ['client_secret as a list', { ...good, client_secret: ['inputsecret'] }],
      ['next_link as a number', { ...good, next_link: 5 }],
      ['next_link as an object', { ...good, next_link: { url: 'https://example.org/' } }],
    ];
    for (const [what, body] of cases) await refused(what, () => requestToken(body), { errcode: 'M_INVALID_PARAM' });
  });

  it('send_attempt that is not a whole number: 400 M_INVALID_PARAM', async () => {
    for (const attempt of ['abc', 1.5, '1.5', '', ' 1', '1e3', true, null, [], {}, [1], 1e300]) {
      await refused(`send_attempt ${JSON.stringify(attempt)}`, () => requestToken({ ...good, send_attempt: attempt }), {
        errcode: 'M_INVALID_PARAM',
        error: /send_attempt/,
      });
    }
  });

  it('a client_secret with other characters than [0-9a-zA-Z.=_-] or longer than 255: Invalid client_secret provided', async () => {
    for (const secret of ['has space', 'sëcret', 'a/b', 'semi;colon', 'new\nline', 'plus+sign', '', 'x'.repeat(256)]) {
      await refused(
        `client_secret ${JSON.stringify(secret.slice(0, 20))}`,
        () => requestToken({ ...good, client_secret: secret }),
        {
          errcode: 'M_INVALID_PARAM',
          error: 'Invalid client_secret provided',
        },
      );
    }
  });

  it('addresses that are not one bare addr-spec: 400 M_INVALID_EMAIL', async () => {
    for (const email of [
      'a@b@example.org',
      'Alice <alice@example.org>',
      '"Alice" <alice@example.org>',
      '<alice@example.org>',
      'alice@example.org\r\nBcc: evil@example.org',
      'alice@example.org\nBcc: evil@example.org',
      'alice@example.org\r',
      'ali ce@example.org',
      ' alice@example.org',
      'alice@example.org ',
      'alice@exa mple.org',
      'alice@example.org\t',
      'alice',
      '@example.org',
      'alice@',
      'alice@example.org,bob@example.org',
      'alice@example.org, bob@example.org',
      'mailto:alice@example.org',
      '.alice@example.org',
      'alice..b@example.org',
      'alice\u00a0x@example.org',
    ]) {
      await refused(`email ${JSON.stringify(email)}`, () => requestToken({ ...good, email }), {
        errcode: 'M_INVALID_EMAIL',
      });
    }
    // a NUL is refused in any field of any body, before the address is looked at
    await refused('email with a NUL', () => requestToken({ ...good, email: 'alice\u0000@example.org' }), {
      errcode: 'M_INVALID_PARAM',
    });
  });

  it('an empty address or one longer than 500 characters: 400 M_INVALID_PARAM', async () => {
    const long = `${'a'.repeat(60)}@${'b'.repeat(436)}.org`;
    expect(long).toHaveLength(501);
    await refused('501 characters', () => requestToken({ ...good, email: long }), { errcode: 'M_INVALID_PARAM' });
    await refused('10 000 characters', () => requestToken({ ...good, email: `a@${'b'.repeat(9996)}.c` }), {
      errcode: 'M_INVALID_PARAM',
    });
    await refused('empty', () => requestToken({ ...good, email: '' }), { errcode: 'M_INVALID_PARAM' });
    // longer than an address can be (254 octets) but not than 500 characters: refused as an address
    await refused('300 characters', () => requestToken({ ...good, email: `a@${'b'.repeat(294)}.org` }), {
      errcode: ['M_INVALID_EMAIL', 'M_INVALID_PARAM'],
    });
  });

  it('a next_link that is not an absolute http(s) URL: 400 M_INVALID_PARAM', async () => {
    for (const next of [
      'javascript:alert(1)',
      'file:///etc/passwd',
      'ftp://example.org/',
      'data:text/html,<script>alert(1)</script>',
      'not a url',
      '/relative/path',
      '//evil.example/x',
    ]) {
      await refused(`next_link ${next}`, () => requestToken({ ...good, next_link: next }), {
        errcode: 'M_INVALID_PARAM',
      });
    }
  });

  it('the limits themselves are accepted: a 255-character secret, an address with a tag and subdomain', async () => {
    const secret = `${'s'.repeat(250)}.=_-9`;
    expect(secret).toHaveLength(255);
    const res = await requestToken({ ...good, client_secret: secret, email: 'user+tag@sub.example.org' });
    expect(res.status, res.text).toBe(200);
    const mail = await smtp.waitForMessage((m) => m.raw.includes(`sid=${String(res.json['sid'])}`));
    expect(mailToken(mail)).toMatch(/^[0-9A-Za-z]{32}$/);
  });

  it('a wrong method is 405 M_UNRECOGNIZED', async () => {
    const res = await call(v1('/validate/email/requestToken'));
    expect(res.status).toBe(405);
    expect(res.json['errcode']).toBe('M_UNRECOGNIZED');
  });
});

describe('POST submitToken and GET getValidated3pid', () => {
  let sid: string;
  let token: string;
  const secret = 'existingsecret';

  beforeAll(async () => {
    const res = await requestToken({ client_secret: secret, email: 'existing@example.org', send_attempt: 1 });
    expect(res.status, res.text).toBe(200);
    sid = res.json['sid'] as string;
    token = mailToken(await smtp.waitForMessage((m) => m.raw.includes(`sid=${sid}`)));
  });

  it('submitToken: missing fields are M_MISSING_PARAMS', async () => {
    for (const key of ['sid', 'client_secret', 'token']) {
      const body: Record<string, unknown> = { sid, client_secret: secret, token };
      delete body[key];
      await refused(`without ${key}`, () => submitToken(body), {
        errcode: 'M_MISSING_PARAMS',
        error: `Missing parameters: ${key}`,
      });
    }
    await refused('empty', () => submitToken({}), { errcode: 'M_MISSING_PARAMS', error: /^Missing parameters: / });
  });

  it('submitToken: mistyped fields and malformed values are M_INVALID_PARAM', async () => {
    const cases: [string, Record<string, unknown>, string?][] = [
      ['client_secret as an object', { sid, client_secret: { a: 1 }, token }],
      ['client_secret with a space', { sid, client_secret: 'bad secret', token }, 'Invalid client_secret provided'],
      ['client_secret of 256', { sid, client_secret: 'x'.repeat(256), token }, 'Invalid client_secret provided'],
      ['token as a number', { sid, client_secret: secret, token: 123 }],
      ['token as an object', { sid, client_secret: secret, token: { token } }],
      ['sid as an object', { sid: { sid }, client_secret: secret, token }],
      ['sid as a fraction', { sid: 1.5, client_secret: secret, token }],
      ['sid as a boolean', { sid: true, client_secret: secret, token }],
      ['sid with bad characters', { sid: `${sid}!`, client_secret: secret, token }],
    ];
    for (const [what, body, error] of cases) {
      await refused(what, () => submitToken(body), { errcode: 'M_INVALID_PARAM', error });
    }
  });

  it('submitToken: wrong token, wrong secret, unknown sid change nothing', async () => {
    const cases: [string, Record<string, unknown>, string][] = [
      ['wrong token', { sid, client_secret: secret, token: 'Z'.repeat(32) }, 'M_TOKEN_INCORRECT'],
      [
        'token in another case',
        {
          sid,
          client_secret: secret,
          token: token.toLowerCase() === token ? token.toUpperCase() : token.toLowerCase(),
        },
        'M_TOKEN_INCORRECT',
      ],
      ['empty token', { sid, client_secret: secret, token: '' }, 'M_TOKEN_INCORRECT'],
      ['wrong secret', { sid, client_secret: 'wrongsecret', token }, 'M_INVALID_PARAM'],
      ['unknown sid', { sid: '1', client_secret: secret, token }, 'M_INVALID_PARAM'],
    ];
    for (const [what, body, errcode] of cases) {
      const res = await refused(what, () => submitToken(body), { errcode });
      expect(res.json['success'], what).toBe(false);
    }
  });

  it('getValidated3pid: missing, malformed and wrong values', async () => {
    await refused('no query', () => getValidated(''), { errcode: 'M_MISSING_PARAMS', error: /^Missing parameters: / });
    await refused('without client_secret', () => getValidated(`?sid=${sid}`), {
      errcode: 'M_MISSING_PARAMS',
      error: 'Missing parameters: client_secret',
    });
    await refused('without sid', () => getValidated(`?client_secret=${secret}`), {
      errcode: 'M_MISSING_PARAMS',
      error: 'Missing parameters: sid',
    });
    await refused('client_secret with a space', () => getValidated(`?sid=${sid}&client_secret=bad%20secret`), {
      errcode: 'M_INVALID_PARAM',
      error: 'Invalid client_secret provided',
    });
    await refused('client_secret of 256', () => getValidated(`?sid=${sid}&client_secret=${'x'.repeat(256)}`), {
      errcode: 'M_INVALID_PARAM',
      error: 'Invalid client_secret provided',
    });
    await refused('wrong secret', () => getValidated(`?sid=${sid}&client_secret=wrongsecret`), {
      status: 404,
      errcode: 'M_NO_VALID_SESSION',
    });
    await refused('unknown sid', () => getValidated(`?sid=1&client_secret=${secret}`), {
      status: 404,
      errcode: 'M_NO_VALID_SESSION',
    });
    await refused('not validated', () => getValidated(`?sid=${sid}&client_secret=${secret}`), {
      errcode: 'M_SESSION_NOT_VALIDATED',
    });
  });

  it('after all that, the session still validates with its token', async () => {
    const ok = await submitToken({ sid, client_secret: secret, token });
    expect(ok.json).toEqual({ success: true });
    expect((await getValidated(`?sid=${sid}&client_secret=${secret}`)).json).toMatchObject({
      medium: 'email',
      address: 'existing@example.org',
    });
  });
});
