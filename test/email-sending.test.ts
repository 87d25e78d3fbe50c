/**
 * What goes over SMTP for an email validation, and what the client hears when it does not go: the envelope,
 * the raw message and its link; an SMTP server that is down, refuses, or fails once; the sender rate limit.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ManualClock } from '../src/clock.js';
import { SMTP_CONNECTIONS } from '../src/mail/transport.js';
import {
  call,
  emailConf,
  hasOnlyCrlf,
  mailLink,
  mailToken,
  portForwarder,
  sameMailbox,
  sessionOf,
  sessionRows,
  tokenRows,
  type Reply,
} from './helpers/email.js';
import { rows } from './helpers/rows.js';
import { freePort } from './helpers/process.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';

/** The time a requestToken has for its mail where the server never answers (`[http] send_deadline_seconds`). */
const SEND_DEADLINE_MS = 4_000;

const started: { close(): Promise<void> }[] = [];
afterAll(async () => {
  for (const s of started.reverse()) await s.close();
});

async function smtpServer(opts: Parameters<typeof startSmtpServer>[0] = {}): Promise<SmtpTestServer> {
  const s = await startSmtpServer(opts);
  started.push(s);
  return s;
}
async function server(smtpPort: number, email: Record<string, string> = {}): Promise<TestServer> {
  const s = await startTestServer({ conf: { email: emailConf(smtpPort, email) } });
  started.push(s);
  return s;
}

function requestToken(t: TestServer, body: Record<string, unknown>): Promise<Reply> {
  return call(t.url('/_matrix/identity/api/v1/validate/email/requestToken'), { body });
}
function submitToken(t: TestServer, body: Record<string, unknown>): Promise<Reply> {
  return call(t.url('/_matrix/identity/api/v1/validate/email/submitToken'), { body });
}

describe('the mail', () => {
  let smtp: SmtpTestServer;
  let t: TestServer;
  beforeAll(async () => {
    smtp = await smtpServer();
    t = await server(smtp.port);
  });

  it('is on the SMTP server when requestToken answers, from the addr-spec of email.from to the address as typed', async () => {
    const typed = 'Mail.Check@Example.org';
    const res = await requestToken(t, { client_secret: 'mailcheck', email: typed, send_attempt: 1 });
    expect(res.status, res.text).toBe(200);
    // no waiting: the answer came after the SMTP server accepted the message
    expect(smtp.messages).toHaveLength(1);
    const mail = smtp.messages[0]!;
    expect(mail.from).toBe('noreply@is.example.test');
    expect(mail.to).toHaveLength(1);
    expect(sameMailbox(mail.to[0]!, typed)).toBe(true);
    expect(mail.to[0]!.startsWith('Mail.Check@')).toBe(true);
  });

  it('is a CRLF message with the template headers and a link to the v2 GET submitToken under client_http_base', async () => {
    const secret = 'link.Secret=1_-';
    const res = await requestToken(t, { client_secret: secret, email: 'headers@example.org', send_attempt: 1 });
    expect(res.status, res.text).toBe(200);
    const sid = res.json['sid'] as string;
    const mail = await smtp.waitForMessage((m) => m.to.includes('headers@example.org'));
    const { raw } = mail;

    expect(hasOnlyCrlf(raw)).toBe(true);
    const [head = ''] = raw.split('\r\n\r\n');
    expect(head).toMatch(/^From: Example IS <noreply@is\.example\.test>$/m);
    expect(head).toMatch(/^To: headers@example\.org$/m);
    expect(head).toMatch(/^Subject: .+$/m);
    expect(head).toMatch(/^MIME-Version: 1\.0$/m);
    expect(head).toMatch(/^Message-ID: <\d+[A-Za-z]{16}@mail\.is\.example\.test>$/m);
    expect(head).toMatch(/^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} -0000$/m);
    const boundary = /boundary="([^"]+)"/.exec(head)?.[1];
    expect(boundary).toMatch(/^[0-9A-Za-z]{32}$/);
    expect(raw).toContain(`\r\n--${boundary}\r\n`);
    expect(raw).toContain(`\r\n--${boundary}--\r\n`);

    const token = mailToken(mail);
    expect(token).toMatch(/^[0-9A-Za-z]{32}$/);
    // Python's quote(): '=' is %3D, '.', '_' and '-' stay
    const link = `https://is.example.test/_matrix/identity/v2/validate/email/submitToken?token=${token}&client_secret=link.Secret%3D1_-&sid=${sid}`;
    expect(raw).toContain(`${link}\r\n`);
    // the HTML part has it HTML-escaped
    expect(raw).toContain(link.replaceAll('&', '&amp;'));
    expect(mailLink(mail).searchParams.get('client_secret')).toBe(secret);

    // the link, opened as it is on this server, validates
    const url = mailLink(mail);
    const page = await call(t.url(url.pathname + url.search));
    expect(page.status, page.text).toBe(200);
    expect(sessionOf(t.config.db.dbFile, sid).session?.validated).toBe(1);
  });
});

describe('SMTP failures', () => {
  it('SMTP down: 500 M_EMAIL_SEND_ERROR; once it is up, the same send_attempt sends (a failed send is not a send), a higher one too', async () => {
    const smtp = await smtpServer();
    const port = await freePort();
    const relay = await portForwarder(port, () => smtp.port);
    started.push({ close: () => relay.down() });
    const t = await server(port);
    const email = 'down@example.org';

    const failed = await requestToken(t, { client_secret: 'downsecret', email, send_attempt: 1 });
    expect(failed.status, failed.text).toBe(500);
    expect(failed.json['errcode']).toBe('M_EMAIL_SEND_ERROR');
    expect(typeof failed.json['error']).toBe('string');
    expect(smtp.messages).toHaveLength(0);
    const rows = sessionRows(t.config.db.dbFile);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ address: email, validated: 0 });
    const sid = String(rows[0]!.id);

    // still down: the same send_attempt tries again (and fails again), rather than answering the old failure
    const stillDown = await requestToken(t, { client_secret: 'downsecret', email, send_attempt: 1 });
    expect(stillDown.status, stillDown.text).toBe(500);
    expect(stillDown.json['errcode']).toBe('M_EMAIL_SEND_ERROR');

    await relay.up();
    const same = await requestToken(t, { client_secret: 'downsecret', email, send_attempt: 1 });
    expect(same.status, same.text).toBe(200);
    expect(same.json).toEqual({ sid });
    expect(smtp.messages).toHaveLength(1);
    expect(tokenRows(t.config.db.dbFile).map((r) => r.sendAttemptNumber)).toEqual([1]);
    const token = mailToken(smtp.messages[0]!);
    // now it was sent: the same send_attempt again sends nothing
    expect((await requestToken(t, { client_secret: 'downsecret', email, send_attempt: 1 })).json).toEqual({ sid });
    expect(smtp.messages).toHaveLength(1);

    const next = await requestToken(t, { client_secret: 'downsecret', email, send_attempt: 2 });
    expect(next.status, next.text).toBe(200);
    expect(next.json).toEqual({ sid });
    expect(smtp.messages).toHaveLength(2);
    expect(sessionRows(t.config.db.dbFile)).toHaveLength(1);
    expect(tokenRows(t.config.db.dbFile).map((r) => r.sendAttemptNumber)).toEqual([2]);
    expect(mailToken(smtp.messages[1]!)).toBe(token);
    expect((await submitToken(t, { sid, client_secret: 'downsecret', token })).json).toEqual({ success: true });
  });

  it('an SMTP server that accepts connections and never answers: 500 M_EMAIL_SEND_ERROR within the time limit; once it works, the same send_attempt sends', async () => {
    const silent = net.createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', () => resolve()));
    started.push({ close: () => new Promise<void>((resolve) => silent.close(() => resolve())) });
    const smtp = await smtpServer();
    let target = (silent.address() as net.AddressInfo).port;
    const relay = await portForwarder(await freePort(), () => target);
    started.push({ close: () => relay.down() });
    await relay.up();
    const t = await startTestServer({
      conf: { email: emailConf(relay.port), http: { send_deadline_seconds: String(SEND_DEADLINE_MS / 1000) } },
    });
    started.push(t);
    const email = 'silent@example.org';

    const began = Date.now();
    const failed = await requestToken(t, { client_secret: 'silentsecret', email, send_attempt: 1 });
    expect(failed.status, failed.text).toBe(500);
    expect(failed.json).toEqual({ errcode: 'M_EMAIL_SEND_ERROR', error: 'Failed to send email' });
    expect(Date.now() - began).toBeLessThan(SEND_DEADLINE_MS + 3000);
    const sid = String(sessionRows(t.config.db.dbFile)[0]!.id);

    // The hung connection is not waited for (nodemailer's greeting timeout, 15 s): the retry opens its own.
    target = smtp.port;
    const retried = Date.now();
    const same = await requestToken(t, { client_secret: 'silentsecret', email, send_attempt: 1 });
    expect(same.status, same.text).toBe(200);
    expect(Date.now() - retried).toBeLessThan(5_000);
    expect(same.json).toEqual({ sid });
    const mail = await smtp.waitForMessage((m) => m.to.includes(email));
    expect((await submitToken(t, { sid, client_secret: 'silentsecret', token: mailToken(mail) })).json).toEqual({
      success: true,
    });
  }, 30_000);
  it('a server that refuses the recipient (550): 500 M_EMAIL_SEND_ERROR', async () => {
    const smtp = await smtpServer({ rejectAll: true });
    const t = await server(smtp.port);
    const res = await requestToken(t, { client_secret: 'rejected', email: 'nobody@example.org', send_attempt: 1 });
    expect(res.status, res.text).toBe(500);
    expect(res.json['errcode']).toBe('M_EMAIL_SEND_ERROR');
    expect(smtp.messages).toHaveLength(0);
  });

  it('a temporary refusal (451) is retried: the client gets its sid and exactly one mail arrives', async () => {
    const smtp = await smtpServer({ failFirst: 1 });
    const t = await server(smtp.port);
    const res = await requestToken(t, { client_secret: 'flaky', email: 'flaky@example.org', send_attempt: 1 });
    expect(res.status, res.text).toBe(200);
    expect(smtp.refused).toBe(1);
    expect(smtp.messages).toHaveLength(1);
    const token = mailToken(smtp.messages[0]!);
    expect((await submitToken(t, { sid: res.json['sid'], client_secret: 'flaky', token })).json).toEqual({
      success: true,
    });
  });
});

describe('SMTP connections', () => {
  it('as many mails go to the SMTP server at once as the pool keeps connections, none waiting behind a smaller queue', async () => {
    // The server holds every mail until SMTP_CONNECTIONS are in at once (3 s at most each): fewer sends at once
    // show as a smaller maxHeld.
    const smtp = await smtpServer({ hold: { until: SMTP_CONNECTIONS, maxMs: 3000 } });
    const t = await server(smtp.port, { 'email.ratelimit_sender.burst': '1000' });
    const n = SMTP_CONNECTIONS + 8;
    const replies = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        requestToken(t, { client_secret: `many${i}`, email: `many${i}@example.org`, send_attempt: 1 }),
      ),
    );
    expect(replies.map((r) => r.status)).toEqual(new Array(n).fill(200));
    expect(smtp.messages).toHaveLength(n);
    expect(smtp.maxHeld).toBe(SMTP_CONNECTIONS);
  });
});

describe('sender rate limit (email.ratelimit_sender)', () => {
  it('the request that would send the third mail is 429 M_LIMIT_EXCEEDED; repeats and invalid requests do not count', async () => {
    const smtp = await smtpServer();
    // 2 at once, then one every 1000 s
    const t = await server(smtp.port, {
      'email.ratelimit_sender.burst': '2',
      'email.ratelimit_sender.rate_hz': '0.001',
    });
    const clock = t.clock as ManualClock;
    const db = t.config.db.dbFile;

    const a = await requestToken(t, { client_secret: 'rl', email: 'a@example.org', send_attempt: 1 });
    expect(a.status, a.text).toBe(200);
    // a repeated send_attempt sends nothing and uses nothing
    for (let i = 0; i < 3; i++) {
      expect((await requestToken(t, { client_secret: 'rl', email: 'a@example.org', send_attempt: 1 })).json).toEqual(
        a.json,
      );
    }
    // invalid requests are refused before the limit is consulted
    for (const bad of [
      { client_secret: 'rl', email: 'not an address', send_attempt: 1 },
      { client_secret: 'bad secret', email: 'x@example.org', send_attempt: 1 },
      { client_secret: 'rl', email: 'x@example.org', send_attempt: 'abc' },
      { client_secret: 'rl', email: 'x@example.org' },
    ]) {
      expect((await requestToken(t, bad)).status).toBe(400);
    }
    const b = await requestToken(t, { client_secret: 'rl', email: 'b@example.org', send_attempt: 1 });
    expect(b.status, b.text).toBe(200);
    expect(smtp.messages).toHaveLength(2);

    const before = { sessions: sessionRows(db), tokens: tokenRows(db) };
    const c = await requestToken(t, { client_secret: 'rl', email: 'c@example.org', send_attempt: 1 });
    expect(c.status, c.text).toBe(429);
    expect(c.json['errcode']).toBe('M_LIMIT_EXCEEDED');
    expect(typeof c.json['error']).toBe('string');
    const retryAfterMs = c.json['retry_after_ms'] as number;
    expect(Number.isInteger(retryAfterMs)).toBe(true);
    expect(retryAfterMs).toBeGreaterThan(0);
    expect(retryAfterMs).toBeLessThanOrEqual(1_000_000);
    expect(c.headers.get('retry-after')).toBe(String(Math.ceil(retryAfterMs / 1000)));

    // a higher send_attempt on an existing session would send: limited too, and nothing changes
    const a2 = await requestToken(t, { client_secret: 'rl', email: 'a@example.org', send_attempt: 2 });
    expect(a2.status).toBe(429);
    expect(a2.json['errcode']).toBe('M_LIMIT_EXCEEDED');
    expect({ sessions: sessionRows(db), tokens: tokenRows(db) }).toEqual(before);
    expect(rows(db, "SELECT * FROM threepid_validation_sessions WHERE address = 'c@example.org'")).toHaveLength(0);
    expect(smtp.messages).toHaveLength(2);

    // a repeat still answers while limited
    expect((await requestToken(t, { client_secret: 'rl', email: 'b@example.org', send_attempt: 1 })).json).toEqual(
      b.json,
    );

    clock.advance(retryAfterMs);
    const later = await requestToken(t, { client_secret: 'rl', email: 'c@example.org', send_attempt: 1 });
    expect(later.status, later.text).toBe(200);
    expect(smtp.messages).toHaveLength(3);
  });
});
