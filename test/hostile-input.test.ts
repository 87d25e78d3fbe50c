/**
 * Hostile input, case by case (the sweep over every route is hostile-sweep.test.ts): a query parameter given twice,
 * an OpenID token too long to be one, a `send_attempt` no later attempt could exceed, an address whose bytes are not
 * UTF-8, and a `next_link` with a line break, which must neither break the redirect nor put secrets in the log.
 */
import Database from 'better-sqlite3';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { call, emailConf, mailLink, sessionOf, sessionRows } from './helpers/email.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import { V1, V2, databaseSnapshot, registerAccount, requestEmailToken } from './helpers/flows.js';
import { inviteBody, readInviteMail, storeInvite } from './helpers/invites.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { tempDir } from './helpers/tmp.js';

let smtp: SmtpTestServer;
let env: FederationEnv;
let t: TestServer;
/** every line the server logged (at info) */
const logLines: string[] = [];

beforeAll(async () => {
  [smtp, env] = await Promise.all([startSmtpServer(), startFederationEnv({})]);
  t = await startTestServer({
    conf: mergeConf(env.conf, { email: emailConf(smtp.port) }),
    log: pino({ level: 'info' }, { write: (line: string) => void logLines.push(line) }),
  });
});
afterAll(async () => {
  await t?.close();
  await Promise.all([smtp?.close(), env?.close()]);
});

/** The world a refused request must leave as it was. */
const world = () => ({ db: databaseSnapshot(t), mails: smtp.messages.length, homeserver: env.hs.requests.length });

describe('a query parameter given twice', () => {
  it('v1 sign-ed25519 with ?token=a&token=b: 400 M_INVALID_PARAM (was a 500)', async () => {
    const stored = await storeInvite(t, 'v1', inviteBody({ address: 'twice.invitee@example.org' }));
    expect(stored.status, stored.text).toBe(200);
    const { token, privateKey } = readInviteMail(
      await smtp.waitForMessage((m) => m.raw.includes(stored.json['token'] as string)),
    );
    const query = (tokens: string[]) =>
      [
        ...tokens.map((x) => `token=${x}`),
        'mxid=%40bob%3Ahs.test',
        `private_key=${encodeURIComponent(privateKey)}`,
      ].join('&');
    const once = await call(t.url(`${V1}/sign-ed25519?${query([token])}`), { method: 'POST' });
    expect(once.status, once.text).toBe(200);
    for (const tokens of [
      [token, token],
      [token, 'other'],
      ['other', token],
    ]) {
      const res = await call(t.url(`${V1}/sign-ed25519?${query(tokens)}`), { method: 'POST' });
      expect(res.status, res.text).toBe(400);
      expect(res.json).toEqual({ errcode: 'M_INVALID_PARAM', error: 'Parameter "token" is given more than once' });
    }
  });

  it('an access token given twice is refused before it is read, on the lookup path as elsewhere', async () => {
    const token = await registerAccount(t, env, 'twice');
    for (const [path, method] of [
      [`${V2}/hash_details`, 'GET'],
      [`${V2}/lookup`, 'POST'],
      [`${V2}/account`, 'GET'],
    ] as const) {
      const ok = await call(t.url(`${path}?access_token=${token}`), { method });
      expect(ok.status, `${path}: ${ok.text}`).not.toBe(401);
      const res = await call(t.url(`${path}?access_token=${token}&access_token=${token}`), { method });
      expect(res.status, `${path}: ${res.text}`).toBe(400);
      expect(res.json['errcode'], path).toBe('M_INVALID_PARAM');
    }
  });
});

describe('an oversized credential', () => {
  it('a 100,000-character OpenID token on account/register: 401 M_UNKNOWN_TOKEN, the homeserver not asked (was a 500)', async () => {
    const before = world();
    const res = await call(t.url(`${V2}/account/register`), {
      body: {
        access_token: 'x'.repeat(100_000),
        token_type: 'Bearer',
        matrix_server_name: env.serverName,
        expires_in: 3600,
      },
    });
    expect(res.status, res.text).toBe(401);
    expect(res.json).toEqual({ errcode: 'M_UNKNOWN_TOKEN', error: expect.any(String) });
    expect(world()).toEqual(before);
  });
});

describe('send_attempt', () => {
  const requestToken = (email: string, sendAttempt: unknown) =>
    call(t.url(`${V1}/validate/email/requestToken`), {
      body: { client_secret: 'attemptsecret', email, send_attempt: sendAttempt },
    });

  it('2^53-1 (or any beyond 2^31-1, or below -2^31): 400 M_INVALID_PARAM, no session, no mail; 2^31-1 is the largest taken', async () => {
    const before = world();
    for (const attempt of [2 ** 53 - 1, '9007199254740991', 2 ** 31, '2147483648', -(2 ** 31) - 1]) {
      const res = await requestToken('huge.attempt@example.org', attempt);
      expect(res.status, `${attempt}: ${res.text}`).toBe(400);
      expect(res.json).toEqual({ errcode: 'M_INVALID_PARAM', error: expect.any(String) });
    }
    expect(world()).toEqual(before);
    const largest = await requestToken('huge.attempt@example.org', 2 ** 31 - 1);
    expect(largest.status, largest.text).toBe(200);
    expect(sessionOf(t.config.db.dbFile, largest.json['sid'] as string).session).toBeDefined();
  });
});

describe('bytes that are not UTF-8', () => {
  const url = () => t.url(`${V1}/validate/email/requestToken`);

  it('in a JSON body (an address with a stray 0xFF): 400 M_NOT_JSON, nothing stored, nothing mailed (was mailed as U+FFFD)', async () => {
    const before = world();
    const body = Buffer.concat([
      Buffer.from('{"client_secret":"utf8secret","send_attempt":1,"email":"alice'),
      Buffer.from([0xff]),
      Buffer.from('@example.org"}'),
    ]);
    const res = await fetch(url(), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: new Uint8Array(body),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ errcode: 'M_NOT_JSON', error: 'Request body is not valid UTF-8' });
    // a moment for a mail that should not come
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(world()).toEqual(before);
  });

  it('in a form body or the query string (%FF): 400 M_INVALID_PARAM, nothing stored, nothing mailed', async () => {
    const before = world();
    const form = await call(url(), {
      body: { client_secret: 'utf8secret', send_attempt: '1', email: 'alice\u00ff@example.org' },
      form: true,
    });
    expect(form.status).toBe(200); // a real ÿ, sent as UTF-8 (%C3%BF), is an address like any other
    const sid = form.json['sid'] as string;
    const after = world();
    const bad = await fetch(url(), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'client_secret=utf8secret&send_attempt=2&email=alice%FF%40example.org',
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toEqual({ errcode: 'M_INVALID_PARAM', error: expect.any(String) });
    const query = await call(t.url(`${V1}/3pid/getValidated3pid?sid=${sid}&client_secret=utf8%FFsecret`));
    expect(query.status).toBe(400);
    expect(query.json['errcode']).toBe('M_INVALID_PARAM');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(world()).toEqual(after);
    expect(before.mails + 1).toBe(after.mails);
  });
});

describe('a next_link with a line break', () => {
  const SECRET = 'nextlinkSECRET';
  /** Follows the mailed link as a browser would (without following the redirect). */
  const follow = (link: URL) => call(t.url(link.pathname + link.search));

  it('is kept as the URL parser writes it: the mailed link redirects to it, no 500, no secret in the log', async () => {
    const typed = 'https://client.example.org/done\r\nSet-Cookie: evil=1';
    const res = await call(t.url(`${V1}/validate/email/requestToken`), {
      body: { client_secret: SECRET, email: 'crlf.next@example.org', send_attempt: 1, next_link: typed },
    });
    expect(res.status, res.text).toBe(200);
    const mail = await smtp.waitForMessage((m) => m.to.includes('crlf.next@example.org'));
    const token = mailLink(mail).searchParams.get('token')!;
    const answer = await follow(mailLink(mail));
    expect(answer.status, answer.text).toBe(302);
    // with the sid appended, as Sydent did
    expect(answer.headers.get('location')).toBe(`${new URL(typed).href}?sid=${String(res.json['sid'])}`);
    expect(answer.headers.get('location')).not.toMatch(/[\r\n]/);
    expect(answer.headers.get('set-cookie')).toBeNull();
    expect(logLines.filter((l) => l.includes(SECRET) || l.includes(token))).toEqual([]);
    expect(logLines.some((l) => l.includes('"msg":"request"') && l.includes('submitToken'))).toBe(true);
  });

  it('a NUL in it is refused: 400 M_INVALID_PARAM, no session', async () => {
    const before = sessionRows(t.config.db.dbFile).length;
    const res = await call(t.url(`${V1}/validate/email/requestToken`), {
      body: {
        client_secret: SECRET,
        email: 'nul.next@example.org',
        send_attempt: 1,
        next_link: 'https://client.example.org/a\u0000b',
      },
    });
    expect(res.status, res.text).toBe(400);
    expect(res.json['errcode']).toBe('M_INVALID_PARAM');
    expect(sessionRows(t.config.db.dbFile)).toHaveLength(before);
  });

  it('one stored before that rule, raw: after a restart the link still redirects (normalised), no 500, no secret in the log', async () => {
    const dir = tempDir();
    const lines: string[] = [];
    const start = () =>
      startTestServer({
        dir: dir.dir,
        conf: { email: emailConf(smtp.port) },
        log: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }),
      });
    try {
      const before = await start();
      const { sid, mail } = await requestEmailToken(before, smtp, {
        email: 'legacy.next@example.org',
        clientSecret: SECRET,
        api: 'v1',
      });
      await before.close();
      // as a version without the rule stored it
      const raw = 'https://client.example.org/legacy\r\nX-Injected: yes';
      const db = new Database(path.join(dir.dir, 'sydent.db'));
      db.prepare("UPDATE session_machines SET context = json_set(context, '$.nextLink', ?) WHERE sid = ?").run(
        raw,
        Number(sid),
      );
      db.close();

      const after = await start();
      try {
        const link = mailLink(mail);
        const answer = await call(after.url(link.pathname + link.search));
        expect(answer.status, answer.text).toBe(302);
        expect(answer.headers.get('location')).toBe(`https://client.example.org/legacyX-Injected:%20yes?sid=${sid}`);
        expect(answer.headers.get('x-injected')).toBeNull();
        const token = link.searchParams.get('token')!;
        expect(lines.filter((l) => l.includes(SECRET) || l.includes(token))).toEqual([]);
        expect(lines.some((l) => l.includes('"msg":"request"') && l.includes('submitToken'))).toBe(true);
      } finally {
        await after.close();
      }
    } finally {
      dir.cleanup();
    }
  });
});
