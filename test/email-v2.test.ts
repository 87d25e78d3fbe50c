/**
 * Email validation on the v2 API: an access token (from /account/register through a loopback homeserver) and
 * accepted terms are needed for requestToken, POST submitToken and getValidated3pid; the GET submitToken link
 * in the mail needs nothing.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  call,
  emailConf,
  mailLink,
  mailToken,
  sameMailbox,
  sessionOf,
  sessionsAndTokens,
  type Reply,
} from './helpers/email.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';

const TERMS = `
master_version: "email_v2_1"
docs:
  terms_of_service:
    version: "1.0"
    langs:
      en: {name: "Terms of Service", url: "https://example.org/tos-1.0-en.html"}
`;

let env: FederationEnv;
let smtp: SmtpTestServer;
let t: TestServer;
/** registered, terms accepted */
let alice: string;
/** registered, terms not accepted */
let bob: string;

beforeAll(async () => {
  env = await startFederationEnv({
    'GET /_matrix/federation/v1/openid/userinfo': (req) => {
      const token = new URL(req.url, 'https://x').searchParams.get('access_token') ?? '';
      const users: Record<string, string> = { 'alice-openid': 'alice', 'bob-openid': 'bob' };
      const user = users[token];
      if (!user) return { status: 401, json: { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token' } };
      return { json: { sub: `@${user}:${env.serverName}` } };
    },
  });
  const termsFile = path.join(env.caFile, '..', 'email-terms.yaml');
  fs.writeFileSync(termsFile, TERMS);
  smtp = await startSmtpServer();
  t = await startTestServer({
    conf: mergeConf(env.conf, { general: { 'terms.path': termsFile }, email: emailConf(smtp.port) }),
  });

  const register = async (openId: string): Promise<string> => {
    const res = await call(v2('/account/register'), {
      body: { access_token: openId, token_type: 'Bearer', matrix_server_name: env.serverName, expires_in: 3600 },
    });
    expect(res.status, res.text).toBe(200);
    return res.json['token'] as string;
  };
  alice = await register('alice-openid');
  bob = await register('bob-openid');
  const accept = await call(v2('/terms'), {
    body: { user_accepts: ['https://example.org/tos-1.0-en.html'] },
    token: alice,
  });
  expect(accept.status, accept.text).toBe(200);
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
  await env?.close();
});

const v2 = (p: string) => t.url(`/_matrix/identity/v2${p}`);
const mailsTo = (address: string) => smtp.messages.filter((m) => m.to.some((r) => sameMailbox(r, address)));

function requestToken(body: unknown, token?: string, form = false): Promise<Reply> {
  return call(v2('/validate/email/requestToken'), { body, token, form });
}
function submitToken(body: unknown, token?: string, form = false): Promise<Reply> {
  return call(v2('/validate/email/submitToken'), { body, token, form });
}
function getValidated(sid: string, secret: string, token?: string): Promise<Reply> {
  return call(v2(`/3pid/getValidated3pid?sid=${sid}&client_secret=${secret}`), { token });
}

function state() {
  return { ...sessionsAndTokens(t.config.db.dbFile), mails: smtp.messages.length };
}

/** A session started by alice, its mail and token. */
async function aliceSession(email: string, secret: string) {
  const res = await requestToken({ client_secret: secret, email, send_attempt: 1 }, alice);
  expect(res.status, res.text).toBe(200);
  const sid = res.json['sid'] as string;
  const mail = mailsTo(email).at(-1)!;
  return { sid, mail, token: mailToken(mail) };
}

describe('authentication', () => {
  it('without a token, or with an unknown one: 401 M_UNAUTHORIZED, nothing stored, nothing sent', async () => {
    const s = await aliceSession('auth.target@example.org', 'authsecret');
    const before = state();
    const attempts: [string, () => Promise<Reply>][] = [
      ['requestToken', () => requestToken({ client_secret: 'noauth', email: 'noauth@example.org', send_attempt: 1 })],
      ['requestToken, bad body', () => requestToken('garbage')],
      [
        'requestToken, unknown token',
        () => requestToken({ client_secret: 'noauth', email: 'noauth@example.org', send_attempt: 1 }, 'nope'),
      ],
      ['submitToken', () => submitToken({ sid: s.sid, client_secret: 'authsecret', token: s.token })],
      [
        'submitToken, unknown token',
        () => submitToken({ sid: s.sid, client_secret: 'authsecret', token: s.token }, 'nope'),
      ],
      ['getValidated3pid', () => getValidated(s.sid, 'authsecret')],
      ['getValidated3pid, unknown token', () => getValidated(s.sid, 'authsecret', 'nope')],
    ];
    for (const [what, send] of attempts) {
      const res = await send();
      expect(res.status, `${what}: ${res.text}`).toBe(401);
      expect(res.json, what).toEqual({ errcode: 'M_UNAUTHORIZED', error: 'Unauthorized' });
    }
    expect(state()).toEqual(before);
    expect(sessionOf(t.config.db.dbFile, s.sid).session?.validated).toBe(0);
  });

  it('with a token whose user has not accepted the terms: 403 M_TERMS_NOT_SIGNED, nothing stored, nothing sent', async () => {
    const s = await aliceSession('terms.target@example.org', 'termssecret');
    const before = state();
    const attempts: [string, () => Promise<Reply>][] = [
      [
        'requestToken',
        () => requestToken({ client_secret: 'bobsecret', email: 'bob@example.org', send_attempt: 1 }, bob),
      ],
      ['submitToken', () => submitToken({ sid: s.sid, client_secret: 'termssecret', token: s.token }, bob)],
      ['getValidated3pid', () => getValidated(s.sid, 'termssecret', bob)],
    ];
    for (const [what, send] of attempts) {
      const res = await send();
      expect(res.status, `${what}: ${res.text}`).toBe(403);
      expect(res.json['errcode'], what).toBe('M_TERMS_NOT_SIGNED');
      expect(typeof res.json['error'], what).toBe('string');
    }
    expect(state()).toEqual(before);
    expect(mailsTo('bob@example.org')).toHaveLength(0);
  });
});

describe('the flow with a token', () => {
  it('requestToken → mail; the mailed GET link works with no token at all; getValidated3pid answers', async () => {
    const email = 'V2.Flow@Example.org';
    const { sid, mail, token } = await aliceSession(email, 'v2flow');
    expect(mailsTo(email)).toHaveLength(1);
    const link = mailLink(mail);
    expect(`${link.origin}${link.pathname}`).toBe(
      'https://is.example.test/_matrix/identity/v2/validate/email/submitToken',
    );
    expect(link.searchParams.get('token')).toBe(token);
    expect(link.searchParams.get('sid')).toBe(sid);

    const page = await call(t.url(link.pathname + link.search));
    expect(page.status, page.text).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    expect(page.text).toContain('Verification successful');

    const v = await getValidated(sid, 'v2flow', alice);
    expect(v.status, v.text).toBe(200);
    expect(v.json).toMatchObject({ medium: 'email', address: 'v2.flow@example.org' });
    expect(typeof v.json['validated_at']).toBe('number');
    // the query-string token is accepted too (spec v1.19)
    const viaQuery = await call(v2(`/3pid/getValidated3pid?sid=${sid}&client_secret=v2flow&access_token=${alice}`));
    expect(viaQuery.status, viaQuery.text).toBe(200);
    expect(viaQuery.json).toEqual(v.json);
  });

  it('the GET link ignores an Authorization header it does not need, even a bad one', async () => {
    const { sid, token } = await aliceSession('v2.header@example.org', 'v2header');
    const res = await fetch(v2(`/validate/email/submitToken?sid=${sid}&client_secret=v2header&token=${token}`), {
      headers: { authorization: 'Bearer not-a-token' },
      redirect: 'manual',
    });
    expect(res.status).toBe(200);
    expect(sessionOf(t.config.db.dbFile, sid).session?.validated).toBe(1);
  });

  it('a failed GET link is a 400 page, with or without a token', async () => {
    const { sid } = await aliceSession('v2.badlink@example.org', 'v2badlink');
    const res = await call(
      v2(`/validate/email/submitToken?sid=${sid}&client_secret=v2badlink&token=${'X'.repeat(32)}`),
    );
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.text).toContain('Verification failed');
  });

  it('POST submitToken with the token validates; its failures are the v1.18 errors', async () => {
    const { sid, token } = await aliceSession('v2.post@example.org', 'v2post');
    const wrong = await submitToken({ sid, client_secret: 'v2post', token: 'Y'.repeat(32) }, alice);
    expect(wrong.status).toBe(400);
    expect(wrong.json).toMatchObject({ errcode: 'M_TOKEN_INCORRECT', success: false });
    const wrongSecret = await submitToken({ sid, client_secret: 'other', token }, alice);
    expect(wrongSecret.status).toBe(400);
    expect(wrongSecret.json).toMatchObject({ errcode: 'M_INVALID_PARAM', success: false });
    expect((await getValidated(sid, 'v2post', alice)).json['errcode']).toBe('M_SESSION_NOT_VALIDATED');
    expect((await getValidated('1', 'v2post', alice)).json['errcode']).toBe('M_NO_VALID_SESSION');

    const ok = await submitToken({ sid, client_secret: 'v2post', token }, alice);
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
    expect((await getValidated(sid, 'v2post', alice)).status).toBe(200);
  });

  it('takes form-urlencoded bodies with the Bearer header', async () => {
    const email = 'v2.form@example.org';
    const res = await requestToken({ client_secret: 'v2form', email, send_attempt: '1' }, alice, true);
    expect(res.status, res.text).toBe(200);
    const sid = res.json['sid'] as string;
    const token = mailToken(mailsTo(email)[0]!);
    const ok = await submitToken({ sid, client_secret: 'v2form', token }, alice, true);
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
  });

  it('send_attempt on v2: the same one again is the same sid and no mail', async () => {
    const email = 'v2.attempt@example.org';
    const first = await aliceSession(email, 'v2attempt');
    const again = await requestToken({ client_secret: 'v2attempt', email, send_attempt: 1 }, alice);
    expect(again.status).toBe(200);
    expect(again.json).toEqual({ sid: first.sid });
    expect(mailsTo(email)).toHaveLength(1);
  });

  it('bad inputs with a good token are still refused before anything is stored', async () => {
    const before = state();
    const cases: [unknown, string][] = [
      [{ client_secret: 'x', send_attempt: 1 }, 'M_MISSING_PARAMS'],
      [{ client_secret: 'x', email: 42, send_attempt: 1 }, 'M_INVALID_PARAM'],
      [{ client_secret: 'bad secret', email: 'v2.bad@example.org', send_attempt: 1 }, 'M_INVALID_PARAM'],
      [{ client_secret: 'x', email: 'Alice <v2.bad@example.org>', send_attempt: 1 }, 'M_INVALID_EMAIL'],
      [{ client_secret: 'x', email: 'v2.bad@example.org', send_attempt: 1.5 }, 'M_INVALID_PARAM'],
      [
        { client_secret: 'x', email: 'v2.bad@example.org', send_attempt: 1, next_link: 'file:///etc/passwd' },
        'M_INVALID_PARAM',
      ],
    ];
    for (const [body, errcode] of cases) {
      const res = await requestToken(body, alice);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.json['errcode'], JSON.stringify(body)).toBe(errcode);
    }
    expect(state()).toEqual(before);
  });
});
