/**
 * Sessions outlive the process: an in-process server stopped and started again on the same files, a real
 * process killed with SIGKILL, and sessions that Sydent itself wrote into an existing database.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { call, emailConf, mailToken, sameMailbox, sessionOf, type Reply } from './helpers/email.js';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { smtpServerForFile } from './helpers/per-file.js';
import { rows as query } from './helpers/rows.js';
import { freePort, spawnServer, waitForStart, writeServerConf, type ServerProcess } from './helpers/process.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer } from './helpers/smtp.js';
import { sydentDb } from './helpers/sydent-rows.js';
import { tempDir } from './helpers/tmp.js';

const smtp = smtpServerForFile();
const cleanups = cleanupsAfterEach();

const api = (base: string, p: string) => `${base}/_matrix/identity/api/v1${p}`;
const requestToken = (base: string, body: Record<string, unknown>) =>
  call(api(base, '/validate/email/requestToken'), { body });
const submitToken = (base: string, body: Record<string, unknown>) =>
  call(api(base, '/validate/email/submitToken'), { body });
const getValidated = (base: string, sid: string, secret: string): Promise<Reply> =>
  call(api(base, `/3pid/getValidated3pid?sid=${sid}&client_secret=${secret}`));
const baseOf = (t: TestServer) => t.url('');
const mailsTo = (address: string) => smtp.messages.filter((m) => m.to.some((r) => sameMailbox(r, address)));

/** An in-process server on its own temp dir; `again()` starts another on the same files. */
async function inProcess(): Promise<{ first: TestServer; again: () => Promise<TestServer> }> {
  const first = await startTestServer({ conf: { email: emailConf(smtp.port) } });
  // t.close() also removes the dir: only once every server on it is stopped
  cleanups.push(() => first.close());
  return {
    first,
    again: async () => {
      const t = await startTestServer({ dir: first.dir, clock: new ManualClock(Date.now()) });
      cleanups.push(() => t.server.close());
      return t;
    },
  };
}

describe('an in-process server restarted on the same files', () => {
  it('submitToken works after a restart, and getValidated3pid after another', async () => {
    const { first, again } = await inProcess();
    const email = 'restart@example.org';
    const res = await requestToken(baseOf(first), { client_secret: 'restartsecret', email, send_attempt: 1 });
    expect(res.status, res.text).toBe(200);
    const sid = res.json['sid'] as string;
    const token = mailToken(mailsTo(email)[0]!);
    await first.server.close();

    const second = await again();
    const ok = await submitToken(baseOf(second), { sid, client_secret: 'restartsecret', token });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
    const validatedAt = (await getValidated(baseOf(second), sid, 'restartsecret')).json['validated_at'];
    expect(typeof validatedAt).toBe('number');
    // the send_attempt was remembered: the same one again sends nothing
    expect(
      (await requestToken(baseOf(second), { client_secret: 'restartsecret', email, send_attempt: 1 })).json,
    ).toEqual({ sid });
    expect(mailsTo(email)).toHaveLength(1);
    await second.server.close();

    const third = await again();
    const v = await getValidated(baseOf(third), sid, 'restartsecret');
    expect(v.status, v.text).toBe(200);
    expect(v.json).toEqual({ medium: 'email', address: email, validated_at: validatedAt });
  });

  it('a session that was not validated is still refused a wrong token, and a higher send_attempt mails a token that works', async () => {
    const { first, again } = await inProcess();
    const email = 'restart.resend@example.org';
    const res = await requestToken(baseOf(first), { client_secret: 'resendsecret', email, send_attempt: 1 });
    const sid = res.json['sid'] as string;
    await first.server.close();

    const second = await again();
    const wrong = await submitToken(baseOf(second), { sid, client_secret: 'resendsecret', token: 'W'.repeat(32) });
    expect(wrong.status).toBe(400);
    expect(wrong.json['errcode']).toBe('M_TOKEN_INCORRECT');
    const resend = await requestToken(baseOf(second), { client_secret: 'resendsecret', email, send_attempt: 2 });
    expect(resend.json).toEqual({ sid });
    expect(mailsTo(email)).toHaveLength(2);
    const token = mailToken(mailsTo(email)[1]!);
    expect((await submitToken(baseOf(second), { sid, client_secret: 'resendsecret', token })).json).toEqual({
      success: true,
    });
  });
});

describe('sessions Sydent created in an existing database', () => {
  it('validate with their token, answer getValidated3pid, and keep Sydent’s columns in step', async () => {
    const { first, again } = await inProcess();
    const db = first.config.db.dbFile;
    await first.server.close();

    const now = Date.now();
    const legacyToken = 'SydentToken0123456789abcdefABCDE';
    const otherToken = 'OtherSydentTokenXYZ0123456789xyz';
    const writer = new Database(db);
    // as Python's sqlite3 (Sydent): foreign keys off; Sydent's token table references a table that does not exist
    writer.pragma('foreign_keys = OFF');
    const insertSession = writer.prepare(
      'INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES (?, ?, ?, ?, ?, ?)',
    );
    const insertToken = writer.prepare(
      'INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) VALUES (?, ?, ?)',
    );
    insertSession.run(123456, 'email', 'legacy@example.org', 'legacysecret', 0, now);
    insertToken.run(123456, legacyToken, 1);
    insertSession.run(654321, 'email', 'legacy.resend@example.org', 'legacysecret', 0, now);
    insertToken.run(654321, otherToken, 1);
    insertSession.run(777, 'email', 'legacy.old@example.org', 'legacysecret', 0, now - 25 * 60 * 60 * 1000);
    insertToken.run(777, 'OldSydentToken0123456789abcdefAB', 1);
    writer.close();

    const t = await again();
    const base = baseOf(t);

    // a wrong token first: refused, nothing changes
    const wrong = await submitToken(base, { sid: '123456', client_secret: 'legacysecret', token: 'W'.repeat(32) });
    expect(wrong.status).toBe(400);
    expect(wrong.json['errcode']).toBe('M_TOKEN_INCORRECT');
    expect(sessionOf(db, 123456).session?.validated).toBe(0);
    expect((await getValidated(base, '123456', 'legacysecret')).json['errcode']).toBe('M_SESSION_NOT_VALIDATED');

    const ok = await submitToken(base, { sid: '123456', client_secret: 'legacysecret', token: legacyToken });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
    const v = await getValidated(base, '123456', 'legacysecret');
    expect(v.status, v.text).toBe(200);
    expect(v.json).toMatchObject({ medium: 'email', address: 'legacy@example.org' });
    expect(typeof v.json['validated_at']).toBe('number');
    const validated = sessionOf(db, 123456);
    expect(validated.session).toMatchObject({
      id: 123456,
      address: 'legacy@example.org',
      clientSecret: 'legacysecret',
      validated: 1,
    });
    expect(validated.tokens).toHaveLength(1);
    expect(validated.tokens[0]).toMatchObject({ token: legacyToken, sendAttemptNumber: 1 });

    // the same email and secret find Sydent's session: send_attempt 1 was seen, so no mail
    const same = await requestToken(base, {
      client_secret: 'legacysecret',
      email: 'legacy.resend@example.org',
      send_attempt: 1,
    });
    expect(same.json).toEqual({ sid: '654321' });
    expect(mailsTo('legacy.resend@example.org')).toHaveLength(0);
    // a higher one sends, and Sydent's sendAttemptNumber follows
    const resend = await requestToken(base, {
      client_secret: 'legacysecret',
      email: 'legacy.resend@example.org',
      send_attempt: 2,
    });
    expect(resend.status, resend.text).toBe(200);
    expect(resend.json).toEqual({ sid: '654321' });
    expect(mailsTo('legacy.resend@example.org')).toHaveLength(1);
    const mailed = mailToken(mailsTo('legacy.resend@example.org')[0]!);
    const resent = sessionOf(db, 654321);
    expect(resent.tokens).toHaveLength(1);
    expect(resent.tokens[0]).toMatchObject({ token: mailed, sendAttemptNumber: 2 });
    expect((await submitToken(base, { sid: '654321', client_secret: 'legacysecret', token: mailed })).json).toEqual({
      success: true,
    });
    expect(sessionOf(db, 654321).session?.validated).toBe(1);

    // Sydent's 24 h apply to its sessions too
    const old = await submitToken(base, {
      sid: '777',
      client_secret: 'legacysecret',
      token: 'OldSydentToken0123456789abcdefAB',
    });
    expect(old.status).toBe(400);
    expect(old.json['errcode']).toBe('M_SESSION_EXPIRED');
    expect((await getValidated(base, '777', 'legacysecret')).json['errcode']).toBe('M_SESSION_EXPIRED');
    expect((await getValidated(base, '777', 'wrongsecret')).status).toBe(404);
  });

  it('getValidated3pid answers the address of a session Sydent stored as the client typed it, and never rewrites it', async () => {
    const { first, again } = await inProcess();
    const db = first.config.db.dbFile;
    await first.server.close();
    const sydent = sydentDb(db);
    // Sydent keys and stores a session by the address exactly as the client sent it (sydent-behaviour §6.4)
    sydent.createSession({
      sid: 4242,
      address: 'Legacy.Mixed@Example.ORG',
      clientSecret: 'mixedsecret',
      token: 'MixedSydentToken0123456789abcdef',
      validated: true,
      sendAttemptNumber: 1,
    });
    sydent.close();

    const t = await again();
    const v = await getValidated(baseOf(t), '4242', 'mixedsecret');
    expect(v.status, v.text).toBe(200);
    expect(v.json).toMatchObject({ medium: 'email', address: 'Legacy.Mixed@Example.ORG' });
    // submitting its token again saves the session: Sydent's row keeps the address it had
    const ok = await submitToken(baseOf(t), {
      sid: '4242',
      client_secret: 'mixedsecret',
      token: 'MixedSydentToken0123456789abcdef',
    });
    expect(ok.json).toEqual({ success: true });
    expect(sessionOf(db, 4242).session).toMatchObject({ address: 'Legacy.Mixed@Example.ORG', validated: 1 });
    expect((await getValidated(baseOf(t), '4242', 'mixedsecret')).json['address']).toBe('Legacy.Mixed@Example.ORG');
  });
});

/**
 * sydent-ts as its own process, on files of its own (removed after the test), mailing through `smtpPort`; each
 * `start()` starts it on those files again, to be killed after the test if it still runs.
 */
async function serverProcess(
  smtpPort: number,
): Promise<{ dir: string; dbFile: string; base: string; start: () => Promise<ServerProcess> }> {
  const tmp = tempDir('sydent-ts-kill-');
  cleanups.push(() => tmp.cleanup());
  const port = await freePort();
  const { confPath, dbFile } = writeServerConf(tmp.dir, port, emailConf(smtpPort));
  const start = async (): Promise<ServerProcess> => {
    const p = spawnServer({ cwd: tmp.dir, args: ['--config', confPath] });
    cleanups.push(() => {
      p.child.kill('SIGKILL');
    });
    await waitForStart(p);
    return p;
  };
  return { dir: tmp.dir, dbFile, base: `http://127.0.0.1:${port}`, start };
}

// Each test starts the server twice: a start takes seconds on a loaded machine, and the two can pass 20 s.
describe('a real process killed with SIGKILL', { timeout: 60_000 }, () => {
  it('requestToken, kill -9, start again: submitToken and getValidated3pid work', async () => {
    const { dir, base, start } = await serverProcess(smtp.port);
    const address = 'killed@example.org';

    const first = await start();
    const res = await requestToken(base, { client_secret: 'killsecret', email: address, send_attempt: 1 });
    expect(res.status, res.text).toBe(200);
    const sid = res.json['sid'] as string;
    const token = mailToken(mailsTo(address)[0]!);

    first.child.kill('SIGKILL');
    expect(await first.exited).toBe('SIGKILL');
    expect(fs.existsSync(path.join(dir, 'sydent.pid'))).toBe(true);

    await start();
    const wrong = await submitToken(base, { sid, client_secret: 'killsecret', token: 'K'.repeat(32) });
    expect(wrong.json['errcode']).toBe('M_TOKEN_INCORRECT');
    const ok = await submitToken(base, { sid, client_secret: 'killsecret', token });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
    const v = await getValidated(base, sid, 'killsecret');
    expect(v.status, v.text).toBe(200);
    expect(v.json).toMatchObject({ medium: 'email', address });
    expect(mailsTo(address)).toHaveLength(1);
  });

  it('kill -9 while the mail is on its way: after the restart its token validates, and the same send_attempt sends again', async () => {
    // The SMTP server takes the messages but answers only when told: the server dies before it knows they arrived.
    let release!: () => void;
    const held = await startSmtpServer({ holdData: new Promise<void>((resolve) => (release = resolve)) });
    cleanups.push(async () => {
      release();
      await held.close();
    });
    const { dbFile, base, start } = await serverProcess(held.port);
    const heldTo = (address: string) => held.messages.filter((m) => m.to.some((r) => sameMailbox(r, address)));

    const first = await start();
    const cut = ['cut.a@example.org', 'cut.b@example.org'].map((email) =>
      requestToken(base, { client_secret: 'cutsecret', email, send_attempt: 1 }).catch((err: unknown) => err),
    );
    const mails = await Promise.all(
      ['cut.a@example.org', 'cut.b@example.org'].map((a) => held.waitForMessage((m) => m.to.includes(a))),
    );
    // The sessions were stored before their mails left: both rows say the send is under way.
    const rows = query<{ state: string }>(dbFile, 'SELECT state FROM session_machines ORDER BY sid');
    expect(rows.map((r) => JSON.parse(r.state))).toEqual([{ live: 'sendingToken' }, { live: 'sendingToken' }]);
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe('SIGKILL');
    for (const answer of await Promise.all(cut)) expect(answer).toBeInstanceOf(Error);
    release();

    await start();
    const sidOf = (address: string) =>
      String(
        query<{ id: number }>(dbFile, 'SELECT id FROM threepid_validation_sessions WHERE address = ?', address)[0]!.id,
      );
    // The user who got the mail: the token in it validates.
    const ok = await submitToken(base, {
      sid: sidOf('cut.a@example.org'),
      client_secret: 'cutsecret',
      token: mailToken(mails[0]!),
    });
    expect(ok.status, ok.text).toBe(200);
    expect(ok.json).toEqual({ success: true });
    // The client that retries the cut request: the same sid, and a new mail, whose token validates too.
    const retry = await requestToken(base, { client_secret: 'cutsecret', email: 'cut.b@example.org', send_attempt: 1 });
    expect(retry.status, retry.text).toBe(200);
    expect(retry.json['sid']).toBe(sidOf('cut.b@example.org'));
    expect(heldTo('cut.b@example.org')).toHaveLength(2);
    const again = await submitToken(base, {
      sid: sidOf('cut.b@example.org'),
      client_secret: 'cutsecret',
      token: mailToken(heldTo('cut.b@example.org')[1]!),
    });
    expect(again.status, again.text).toBe(200);
  });
});
