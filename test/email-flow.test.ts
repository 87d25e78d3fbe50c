/**
 * Email 3PID validation end to end on the v1 API (no authentication): requestToken, the mail, submitToken by
 * POST and by the mailed GET link, getValidated3pid, send_attempt, case folding and the 24 h session lifetime.
 * v2 authentication is in email-v2.test.ts; bad inputs in email-inputs.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManualClock } from '../src/clock.js';
import { call, emailConf, mailLink, mailToken, sameMailbox, sessionOf, type Reply } from './helpers/email.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type ReceivedMail, type SmtpTestServer } from './helpers/smtp.js';

const DAY = 24 * 60 * 60 * 1000;
const OPAQUE_ID = /^[0-9a-zA-Z.=_-]{1,255}$/;

let smtp: SmtpTestServer;
let t: TestServer;
let clock: ManualClock;

beforeAll(async () => {
  smtp = await startSmtpServer();
  t = await startTestServer({ conf: { email: emailConf(smtp.port) } });
  clock = t.clock as ManualClock;
});
afterAll(async () => {
  await t?.close();
  await smtp?.close();
});

const v1 = (p: string) => t.url(`/_matrix/identity/api/v1${p}`);
const mailsTo = (address: string): ReceivedMail[] =>
  smtp.messages.filter((m) => m.to.some((r) => sameMailbox(r, address)));

function requestToken(body: Record<string, unknown>, opts: { form?: boolean; query?: string } = {}): Promise<Reply> {
  return call(v1(`/validate/email/requestToken${opts.query ?? ''}`), { body, form: opts.form });
}
function submitToken(body: Record<string, unknown>, opts: { form?: boolean } = {}): Promise<Reply> {
  return call(v1('/validate/email/submitToken'), { body, form: opts.form });
}
function getValidated(sid: string, secret: string): Promise<Reply> {
  return call(v1(`/3pid/getValidated3pid?sid=${encodeURIComponent(sid)}&client_secret=${encodeURIComponent(secret)}`));
}
function openLink(query: string): Promise<Reply> {
  return call(v1(`/validate/email/submitToken?${query}`));
}

/** requestToken that must send a mail: the sid, the mail and its token. */
async function startSession(
  email: string,
  secret: string,
  attempt: number | string = 1,
  extra: Record<string, unknown> = {},
) {
  const before = mailsTo(email).length;
  const res = await requestToken({ client_secret: secret, email, send_attempt: attempt, ...extra });
  expect(res.status, res.text).toBe(200);
  const sid = res.json['sid'] as string;
  // requestToken answers once the SMTP server accepted the mail: it is already there
  expect(mailsTo(email)).toHaveLength(before + 1);
  const mail = mailsTo(email).at(-1)!;
  return { sid, mail, token: mailToken(mail) };
}

describe('the whole flow on v1', () => {
  it('requestToken sends one mail; POST submitToken validates; getValidated3pid answers the casefolded address', async () => {
    const secret = 'flow.Secret=1_-';
    const res = await requestToken({ client_secret: secret, email: 'Alice.Flow@Example.COM', send_attempt: 1 });
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(Object.keys(res.json)).toEqual(['sid']);
    const sid = res.json['sid'] as string;
    expect(typeof sid).toBe('string');
    expect(sid).toMatch(OPAQUE_ID);

    const mails = mailsTo('Alice.Flow@Example.COM');
    expect(mails).toHaveLength(1);
    const token = mailToken(mails[0]!);
    expect(token).toMatch(/^[0-9A-Za-z]{32}$/);
    expect(mailLink(mails[0]!).searchParams.get('sid')).toBe(sid);
    expect(mailLink(mails[0]!).searchParams.get('client_secret')).toBe(secret);

    // Sydent's rows: the normalised address, not validated, the mailed token, the send_attempt that sent it
    const before = sessionOf(t.config.db.dbFile, sid);
    expect(before.session).toMatchObject({
      medium: 'email',
      address: 'alice.flow@example.com',
      clientSecret: secret,
      validated: 0,
      mtime: clock.now(),
    });
    expect(before.tokens).toHaveLength(1);
    expect(before.tokens[0]).toMatchObject({ token, sendAttemptNumber: 1 });

    const early = await getValidated(sid, secret);
    expect(early.status).toBe(400);
    expect(early.json['errcode']).toBe('M_SESSION_NOT_VALIDATED');

    clock.advance(60_000);
    const validatedAt = clock.now();
    const submit = await submitToken({ sid, client_secret: secret, token });
    expect(submit.status).toBe(200);
    expect(submit.json).toEqual({ success: true });
    expect(sessionOf(t.config.db.dbFile, sid).session?.validated).toBe(1);

    clock.advance(60_000);
    const validated = await getValidated(sid, secret);
    expect(validated.status).toBe(200);
    // validated_at is the time of the validation (sydent-behaviour §12 item 19)
    expect(validated.json).toEqual({ medium: 'email', address: 'alice.flow@example.com', validated_at: validatedAt });

    // Submitting the right token again is harmless.
    expect((await submitToken({ sid, client_secret: secret, token })).json).toEqual({ success: true });
    expect(mailsTo('Alice.Flow@Example.COM')).toHaveLength(1);
  });

  it('takes form-urlencoded bodies on requestToken and submitToken', async () => {
    const email = 'form.user@example.org';
    const res = await requestToken({ client_secret: 'formsecret', email, send_attempt: '1' }, { form: true });
    expect(res.status, res.text).toBe(200);
    const sid = res.json['sid'] as string;
    const token = mailToken(mailsTo(email)[0]!);
    const wrong = await submitToken({ sid, client_secret: 'formsecret', token: 'x'.repeat(32) }, { form: true });
    expect(wrong.status).toBe(400);
    expect(wrong.json['errcode']).toBe('M_TOKEN_INCORRECT');
    const ok = await submitToken({ sid, client_secret: 'formsecret', token }, { form: true });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
    expect((await getValidated(sid, 'formsecret')).json['address']).toBe(email);
  });

  it('accepts the sid as a JSON number on submitToken', async () => {
    const { sid, token } = await startSession('numeric.sid@example.org', 'numsecret');
    const ok = await submitToken({ sid: Number(sid), client_secret: 'numsecret', token });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
  });

  it('gives each session its own random 32-character token and its own sid', async () => {
    const a = await startSession('random.tokens@example.org', 'secretA');
    const b = await startSession('random.tokens@example.org', 'secretB');
    const c = await startSession('other.tokens@example.org', 'secretA');
    expect(new Set([a.sid, b.sid, c.sid]).size).toBe(3);
    expect(new Set([a.token, b.token, c.token]).size).toBe(3);
    for (const x of [a, b, c]) expect(x.token).toMatch(/^[0-9A-Za-z]{32}$/);
    // a token belongs to its session only
    const crossed = await submitToken({ sid: a.sid, client_secret: 'secretA', token: b.token });
    expect(crossed.status).toBe(400);
    expect(crossed.json['errcode']).toBe('M_TOKEN_INCORRECT');
  });
});

describe('sids', () => {
  const HOUR = 60 * 60 * 1000;
  const hourOf = (sid: string) => Math.floor(Number(sid) / 2 ** 31);

  it("are the hour times 2^31 plus 31 random bits: an hour's sessions side by side, the next hour's after them", async () => {
    const hour = Math.floor(clock.now() / HOUR);
    const a = await startSession('hour.a@example.org', 'hoursecret');
    const b = await startSession('hour.b@example.org', 'hoursecret');
    for (const sid of [a.sid, b.sid]) {
      expect(sid).toMatch(/^\d{16}$/);
      expect(Number.isSafeInteger(Number(sid))).toBe(true);
      expect(hourOf(sid)).toBe(hour);
    }
    expect(a.sid).not.toBe(b.sid);
    clock.advance(HOUR);
    const c = await startSession('hour.c@example.org', 'hoursecret');
    expect(hourOf(c.sid)).toBe(hour + 1);
    expect(Number(c.sid)).toBeGreaterThan(Math.max(Number(a.sid), Number(b.sid)));
    // each still names its own session
    for (const s of [a, b, c]) {
      const ok = await submitToken({ sid: s.sid, client_secret: 'hoursecret', token: s.token });
      expect(ok.json, s.sid).toEqual({ success: true });
    }
  });

  it("one that no session of ours or Sydent's can have (17 digits, past 2^53) is no session, not an error", async () => {
    for (const sid of ['12345678901234567', '9007199254740993', '9999999999999999']) {
      const res = await getValidated(sid, 'hoursecret');
      expect(res.status, sid).toBe(404);
      expect(res.json['errcode'], sid).toBe('M_NO_VALID_SESSION');
    }
  });
});

describe('send_attempt', () => {
  it('sends a new mail only for a send_attempt greater than the last one; otherwise success, same sid, no mail', async () => {
    const email = 'attempts@example.org';
    const first = await startSession(email, 'attemptsecret', 1);

    for (const attempt of [1, 0, -5, '1']) {
      const again = await requestToken({ client_secret: 'attemptsecret', email, send_attempt: attempt });
      expect(again.status, `send_attempt ${JSON.stringify(attempt)}`).toBe(200);
      expect(again.json).toEqual({ sid: first.sid });
    }
    expect(mailsTo(email)).toHaveLength(1);

    const second = await startSession(email, 'attemptsecret', '2');
    expect(second.sid).toBe(first.sid);
    expect(mailsTo(email)).toHaveLength(2);
    expect(sessionOf(t.config.db.dbFile, first.sid).tokens.map((r) => r.sendAttemptNumber)).toEqual([2]);

    // 2 again: nothing new
    expect((await requestToken({ client_secret: 'attemptsecret', email, send_attempt: 2 })).json).toEqual({
      sid: first.sid,
    });
    expect(mailsTo(email)).toHaveLength(2);
    expect(sessionOf(t.config.db.dbFile, first.sid).tokens).toHaveLength(1);
    expect(sessionOf(t.config.db.dbFile, first.sid).session).toBeDefined();

    const ok = await submitToken({ sid: first.sid, client_secret: 'attemptsecret', token: second.token });
    expect(ok.json).toEqual({ success: true });
  });

  it('identical requests racing each other share one session and send one mail', async () => {
    const email = 'racing@example.org';
    const replies = await Promise.all(
      Array.from({ length: 6 }, () => requestToken({ client_secret: 'racesecret', email, send_attempt: 1 })),
    );
    for (const r of replies) expect(r.status, r.text).toBe(200);
    const sids = new Set(replies.map((r) => r.json['sid']));
    expect(sids.size).toBe(1);
    expect(mailsTo(email)).toHaveLength(1);
    const sid = [...sids][0] as string;
    expect(sessionOf(t.config.db.dbFile, sid).tokens).toHaveLength(1);
  });

  it('a validated session asked again answers the same sid without a mail', async () => {
    const email = 'validated.again@example.org';
    const s = await startSession(email, 'vsecret');
    expect((await submitToken({ sid: s.sid, client_secret: 'vsecret', token: s.token })).json).toEqual({
      success: true,
    });
    const again = await requestToken({ client_secret: 'vsecret', email, send_attempt: 1 });
    expect(again.status).toBe(200);
    expect(again.json).toEqual({ sid: s.sid });
    expect(mailsTo(email)).toHaveLength(1);
    expect((await getValidated(s.sid, 'vsecret')).status).toBe(200);
  });
});

describe('addresses', () => {
  it('casefolds with full Unicode folding (ß → ss) for storage and answers, and mails the address as typed', async () => {
    const typed = 'Strauß@Example.COM';
    const res = await requestToken({ client_secret: 'foldsecret', email: typed, send_attempt: 1 });
    expect(res.status, res.text).toBe(200);
    const sid = res.json['sid'] as string;
    const mail = await smtp.waitForMessage((m) => m.raw.includes(`sid=${sid}`));
    // the envelope goes to the address as typed (not casefolded): `Strauß`, not `strauss`
    expect(mail.to).toHaveLength(1);
    expect(sameMailbox(mail.to[0]!, typed)).toBe(true);
    expect(mail.raw).toMatch(/^To: Strauß@Example\.COM\r$/m);
    expect(sessionOf(t.config.db.dbFile, sid).session?.address).toBe('strauss@example.com');

    expect((await submitToken({ sid, client_secret: 'foldsecret', token: mailToken(mail) })).json).toEqual({
      success: true,
    });
    const v = await getValidated(sid, 'foldsecret');
    expect(v.status).toBe(200);
    expect(v.json['address']).toBe('strauss@example.com');

    // the same 3PID typed differently is the same session
    const other = await requestToken({ client_secret: 'foldsecret', email: 'STRAUSS@example.com', send_attempt: 1 });
    expect(other.status).toBe(200);
    expect(other.json).toEqual({ sid });
  });
});

describe('submitToken and getValidated3pid failures', () => {
  it('POST submitToken: wrong token, wrong secret, unknown sid are 400 with success: false; the session survives them', async () => {
    const s = await startSession('failures@example.org', 'failsecret');

    const wrongToken = await submitToken({ sid: s.sid, client_secret: 'failsecret', token: 'A'.repeat(32) });
    expect(wrongToken.status).toBe(400);
    expect(wrongToken.json).toMatchObject({ errcode: 'M_TOKEN_INCORRECT', success: false });
    expect(typeof wrongToken.json['error']).toBe('string');

    const wrongSecret = await submitToken({ sid: s.sid, client_secret: 'othersecret', token: s.token });
    expect(wrongSecret.status).toBe(400);
    expect(wrongSecret.json).toMatchObject({ errcode: 'M_INVALID_PARAM', success: false });
    expect(typeof wrongSecret.json['error']).toBe('string');

    const unknownSid = await submitToken({ sid: '1', client_secret: 'failsecret', token: s.token });
    expect(unknownSid.status).toBe(400);
    expect(unknownSid.json).toMatchObject({ errcode: 'M_INVALID_PARAM', success: false });

    expect(sessionOf(t.config.db.dbFile, s.sid).session?.validated).toBe(0);
    expect((await getValidated(s.sid, 'failsecret')).json['errcode']).toBe('M_SESSION_NOT_VALIDATED');

    const ok = await submitToken({ sid: s.sid, client_secret: 'failsecret', token: s.token });
    expect(ok.json).toEqual({ success: true });
  });

  it('getValidated3pid: an unknown sid and a wrong secret are the same 404 M_NO_VALID_SESSION', async () => {
    const s = await startSession('nosession@example.org', 'nssecret');
    await submitToken({ sid: s.sid, client_secret: 'nssecret', token: s.token });

    const unknown = await getValidated('1', 'nssecret');
    const wrongSecret = await getValidated(s.sid, 'not-the-secret');
    expect(unknown.status).toBe(404);
    expect(unknown.json['errcode']).toBe('M_NO_VALID_SESSION');
    expect(wrongSecret.status).toBe(404);
    expect(wrongSecret.json).toEqual(unknown.json);
    // a sid that is no number of ours is no session either
    expect((await getValidated('abc', 'nssecret')).json['errcode']).toBe('M_NO_VALID_SESSION');
  });
});

describe('session lifetime (24 h after the last change)', () => {
  it('an expired session answers M_SESSION_EXPIRED; asking again revives it with a new mail and a new token', async () => {
    const email = 'expiry@example.org';
    const old = await startSession(email, 'expsecret');

    clock.advance(DAY + 1);
    const late = await submitToken({ sid: old.sid, client_secret: 'expsecret', token: old.token });
    expect(late.status).toBe(400);
    expect(late.json).toMatchObject({ errcode: 'M_SESSION_EXPIRED', success: false });
    const lateCheck = await getValidated(old.sid, 'expsecret');
    expect(lateCheck.status).toBe(400);
    expect(lateCheck.json['errcode']).toBe('M_SESSION_EXPIRED');
    const lateLink = await openLink(`sid=${old.sid}&client_secret=expsecret&token=${old.token}`);
    expect(lateLink.status).toBe(400);
    expect(sessionOf(t.config.db.dbFile, old.sid).session?.validated).toBe(0);

    // the same email and secret again: the session lives again, with a fresh token
    const revived = await startSession(email, 'expsecret', 1);
    expect(revived.sid).toBe(old.sid);
    expect(revived.token).not.toBe(old.token);
    expect(revived.token).toMatch(/^[0-9A-Za-z]{32}$/);
    expect(sessionOf(t.config.db.dbFile, old.sid).tokens.map((r) => r.token)).toEqual([revived.token]);

    const oldToken = await submitToken({ sid: old.sid, client_secret: 'expsecret', token: old.token });
    expect(oldToken.status).toBe(400);
    expect(oldToken.json['errcode']).toBe('M_TOKEN_INCORRECT');
    expect((await getValidated(old.sid, 'expsecret')).json['errcode']).toBe('M_SESSION_NOT_VALIDATED');

    expect((await submitToken({ sid: old.sid, client_secret: 'expsecret', token: revived.token })).json).toEqual({
      success: true,
    });
    expect((await getValidated(old.sid, 'expsecret')).status).toBe(200);
  });

  it('counts from the last change: a repeated requestToken extends the session, validation restarts the 24 h', async () => {
    const email = 'lastchange@example.org';
    const s = await startSession(email, 'lcsecret');
    clock.advance(20 * 60 * 60 * 1000);
    // a repeat (no mail) is still a change
    expect((await requestToken({ client_secret: 'lcsecret', email, send_attempt: 1 })).json).toEqual({ sid: s.sid });
    clock.advance(20 * 60 * 60 * 1000);
    // 40 h after creation, 20 h after the last change
    expect((await submitToken({ sid: s.sid, client_secret: 'lcsecret', token: s.token })).json).toEqual({
      success: true,
    });

    clock.advance(DAY - 1000);
    expect((await getValidated(s.sid, 'lcsecret')).status).toBe(200);
    clock.advance(2000);
    const expired = await getValidated(s.sid, 'lcsecret');
    expect(expired.status).toBe(400);
    expect(expired.json['errcode']).toBe('M_SESSION_EXPIRED');
    expect(mailsTo(email)).toHaveLength(1);
  });

  it('a validated session that expired must be validated again after it is revived', async () => {
    const email = 'revalidate@example.org';
    const s = await startSession(email, 'rvsecret');
    expect((await submitToken({ sid: s.sid, client_secret: 'rvsecret', token: s.token })).json).toEqual({
      success: true,
    });
    clock.advance(DAY + 1);
    const revived = await startSession(email, 'rvsecret', 1);
    expect(revived.sid).toBe(s.sid);
    expect(sessionOf(t.config.db.dbFile, s.sid).session?.validated).toBe(0);
    expect((await getValidated(s.sid, 'rvsecret')).json['errcode']).toBe('M_SESSION_NOT_VALIDATED');
  });
});

describe('GET submitToken (the link in the mail)', () => {
  it('the mailed link, opened as it is, shows the success page; getValidated3pid then answers', async () => {
    const s = await startSession('link.open@example.org', 'linksecret');
    const link = mailLink(s.mail);
    expect(link.pathname).toBe('/_matrix/identity/v2/validate/email/submitToken');
    // the link points at client_http_base; open the same path and query on the test server, with no token
    const res = await call(t.url(link.pathname + link.search));
    expect(res.status, res.text).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.text).toContain('Verification successful! Please return to your Matrix client to continue.');
    expect(res.headers.get('location')).toBeNull();
    expect((await getValidated(s.sid, 'linksecret')).status).toBe(200);
  });

  it('redirects (302) to the next_link given at requestToken, with the sid appended as Sydent did, after a success', async () => {
    const next = 'https://client.example.org/after/validation?x=1&y=%20z';
    const s = await startSession('link.next@example.org', 'nextsecret', 1, { next_link: next });
    const res = await openLink(`sid=${s.sid}&client_secret=nextsecret&token=${s.token}`);
    expect(res.status).toBe(302);
    expect(res.headers.get('location')).toBe(`${next}&sid=${s.sid}`);
    expect(sessionOf(t.config.db.dbFile, s.sid).session?.validated).toBe(1);

    // POST ignores next_link
    const post = await submitToken({ sid: s.sid, client_secret: 'nextsecret', token: s.token });
    expect(post.status).toBe(200);
    expect(post.json).toEqual({ success: true });
  });

  it('never redirects to a link that was not given at requestToken', async () => {
    const s = await startSession('link.nonext@example.org', 'nonextsecret');
    const res = await openLink(
      `sid=${s.sid}&client_secret=nonextsecret&token=${s.token}&nextLink=${encodeURIComponent('https://evil.example/')}` +
        `&next_link=${encodeURIComponent('https://evil.example/')}`,
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('location')).toBeNull();
  });

  it('a failed validation is a 400 page and validates nothing', async () => {
    const s = await startSession('link.fail@example.org', 'lfsecret', 1, { next_link: 'https://client.example.org/' });
    for (const q of [
      `sid=${s.sid}&client_secret=lfsecret&token=${'B'.repeat(32)}`,
      `sid=${s.sid}&client_secret=wrongsecret&token=${s.token}`,
      `sid=1&client_secret=lfsecret&token=${s.token}`,
      `sid=${s.sid}&client_secret=lfsecret`,
      `client_secret=lfsecret&token=${s.token}`,
      `sid=${s.sid}&client_secret=bad%20secret&token=${s.token}`,
    ]) {
      const res = await openLink(q);
      expect(res.status, q).toBe(400);
      expect(res.headers.get('content-type'), q).toMatch(/^text\/html/);
      expect(res.text, q).toContain('Verification failed: you may need to request another verification email');
      expect(res.headers.get('location'), q).toBeNull();
    }
    expect(sessionOf(t.config.db.dbFile, s.sid).session?.validated).toBe(0);
    expect((await getValidated(s.sid, 'lfsecret')).json['errcode']).toBe('M_SESSION_NOT_VALIDATED');
  });
});
