import net from 'node:net';
import path from 'node:path';
import SmtpConnection from 'nodemailer/lib/smtp-connection';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { createActor } from 'xstate';
import { ask } from '../src/actors/ask.js';
import { Cancellation } from '../src/actors/request-context.js';
import { ManualClock } from '../src/clock.js';
import type { SystemDeps } from '../src/actors/deps.js';
import { createMailerSupervisor } from '../src/actors/supervisors/mailer.js';
import type { EmailConfig, SmtpTlsMode, SydentConfig } from '../src/config/types.js';
import { composeMail } from '../src/mail/message.js';
import {
  envelopeAddress,
  isTemporaryFailure,
  MailSendError,
  sendRawMail,
  toMailSendError,
  withoutAddresses,
} from '../src/mail/sender.js';
import { resolveTemplate } from '../src/mail/templates.js';
import { SmtpPool } from '../src/mail/smtp-pool.js';
import type { WorkerTransport } from '../src/mail/worker-transport.js';
import { createSmtpTransport } from '../src/mail/transport.js';
import { startSmtpServer, testCertificates, type SmtpTestServer } from './helpers/smtp.js';

const FROM = 'Sydent Validation <noreply@is.example.test>';
const AUTH = { user: 'sydent', pass: 'correct horse' };

const shipped = {
  general: { templatesPath: path.resolve('config/templates'), validBrands: ['matrix-org'], brandDefault: 'matrix-org' },
  email: { template: null, inviteTemplate: null },
  http: { verifyResponseTemplate: null },
} as unknown as SydentConfig;

function emailConfig(port: number, tlsMode: SmtpTlsMode, auth?: { user: string; pass: string }): EmailConfig {
  return {
    from: FROM,
    hostname: 'is.example.test',
    smtpHost: '127.0.0.1',
    smtpPort: port,
    smtpUsername: auth?.user ?? '',
    smtpPassword: auth?.pass ?? '',
    tlsMode,
    ratelimitSender: { burst: 2, rateHz: 1 / 300 },
  } as EmailConfig;
}

function verificationMail(to = 'alice@example.org') {
  const t = resolveTemplate(shipped, null, 'verification_template.eml');
  return composeMail(
    t,
    to,
    { link: 'https://is.example.test/submit?token=a&sid=1', token: 'abc' },
    {
      email: { from: FROM, hostname: 'is.example.test' },
    },
  );
}

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function server(opts: Parameters<typeof startSmtpServer>[0]): Promise<SmtpTestServer> {
  const s = await startSmtpServer(opts);
  cleanups.push(() => s.close());
  return s;
}

async function transport(email: EmailConfig, trustTestCa = true, idleMs?: number): Promise<WorkerTransport> {
  const t = createSmtpTransport(email, { ...(trustTestCa ? { ca: (await testCertificates()).ca } : {}), idleMs });
  cleanups.push(() => t.close());
  return t;
}

/** a port where nothing listens */
async function deadPort(): Promise<number> {
  const s = await startSmtpServer();
  await s.close();
  return s.port;
}

const fast = { baseDelayMs: 1 };

describe('sending end to end', () => {
  it.each([
    // plain mode against a server that offers STARTTLS: it must not upgrade
    { mode: 'plain' as const, serverTls: 'starttls' as const, secure: false },
    { mode: 'starttls' as const, serverTls: 'starttls' as const, secure: true },
    { mode: 'ssl' as const, serverTls: 'ssl' as const, secure: true },
  ])('$mode mode with AUTH: delivered byte-exact, envelope from = addr-spec', async ({ mode, serverTls, secure }) => {
    const smtp = await server({ tls: serverTls, auth: AUTH });
    const t = await transport(emailConfig(smtp.port, mode, AUTH));
    const mail = verificationMail();
    const result = await sendRawMail(t, FROM, { to: mail.to, raw: mail.raw }, fast);
    expect(result).toEqual({ messageId: mail.messageId, accepted: ['alice@example.org'] });
    const got = await smtp.waitForMessage();
    expect(got.from).toBe('noreply@is.example.test');
    expect(got.to).toEqual(['alice@example.org']);
    expect(got.secure).toBe(secure);
    expect(got.user).toBe('sydent');
    expect(got.raw).toBe(mail.raw);
  });

  it('delivers UTF-8 content and a UTF-8 address unchanged', async () => {
    const smtp = await server({});
    const t = await transport(emailConfig(smtp.port, 'plain'));
    const raw = 'Subject: =?utf8?q?hi?=\r\nTo: straße@example.org\r\n\r\nStrauß 日本 🙂\r\n.leading dot\r\n';
    await sendRawMail(t, 'noreply@is.example.test', { to: 'straße@example.org', raw }, fast);
    const got = await smtp.waitForMessage();
    expect(got.to).toEqual(['straße@example.org']);
    expect(got.raw).toBe(raw);
  });

  it('retries 451 twice, then delivers once', async () => {
    const smtp = await server({ failFirst: 2 });
    const t = await transport(emailConfig(smtp.port, 'plain'));
    const mail = verificationMail();
    const retries: number[] = [];
    const result = await sendRawMail(t, FROM, mail, { ...fast, onRetry: (_e, _n, delay) => void retries.push(delay) });
    expect(result.messageId).toBe(mail.messageId);
    expect(smtp.refused).toBe(2);
    expect(smtp.messages).toHaveLength(1);
    expect(retries).toEqual([1, 2]);
  });

  it('fails at once on 550, without retrying', async () => {
    const smtp = await server({ rejectAll: true });
    const t = await transport(emailConfig(smtp.port, 'plain'));
    let retried = 0;
    const err = await sendRawMail(t, FROM, verificationMail(), { ...fast, onRetry: () => retried++ }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MailSendError);
    expect(err).toMatchObject({ permanent: true, responseCode: 550, attempts: 1 });
    expect(retried).toBe(0);
    expect(smtp.messages).toHaveLength(0);
  });

  it('fails as temporary after 3 attempts when the server is down', async () => {
    const t = await transport(emailConfig(await deadPort(), 'plain'));
    const delays: number[] = [];
    const err = await sendRawMail(t, FROM, verificationMail(), {
      ...fast,
      onRetry: (_e, _n, d) => delays.push(d),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MailSendError);
    expect(err).toMatchObject({ permanent: false, attempts: 3 });
    expect(delays).toEqual([1, 2]);
  });

  it('a deadline: a server that never answers fails by then (temporary, ETIMEDOUT), with no attempt after it', async () => {
    const connections: net.Socket[] = [];
    const silent = net.createServer((socket) => connections.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', () => resolve()));
    cleanups.push(
      () =>
        new Promise<void>((resolve) => {
          for (const c of connections) c.destroy();
          silent.close(() => resolve());
        }),
    );
    const t = await transport(emailConfig((silent.address() as net.AddressInfo).port, 'plain'));
    const began = Date.now();
    const err = await sendRawMail(t, FROM, verificationMail(), { ...fast, deadline: began + 600 }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MailSendError);
    expect(err).toMatchObject({ permanent: false, code: 'ETIMEDOUT', attempts: 1 });
    expect(Date.now() - began).toBeLessThan(3000);
    expect(connections).toHaveLength(1);

    // a deadline already passed (the message waited too long in the queue): nothing is attempted
    const late = await sendRawMail(t, FROM, verificationMail(), { ...fast, deadline: Date.now() - 1 }).catch(
      (e: unknown) => e,
    );
    expect(late).toMatchObject({ permanent: false, code: 'ETIMEDOUT' });
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(connections).toHaveLength(1);
  });

  it('refuses a certificate it cannot verify (permanent)', async () => {
    const smtp = await server({ tls: 'ssl' });
    const t = await transport(emailConfig(smtp.port, 'ssl'), false);
    let retried = 0;
    const err = await sendRawMail(t, FROM, verificationMail(), { ...fast, onRetry: () => retried++ }).catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ permanent: true, attempts: 1 });
    expect((err as Error).message).toMatch(/certificate/);
    expect(retried).toBe(0);
    expect(smtp.messages).toHaveLength(0);
  });

  it('checks the certificate in starttls mode too', async () => {
    const smtp = await server({ tls: 'starttls' });
    const t = await transport(emailConfig(smtp.port, 'starttls'), false);
    await expect(sendRawMail(t, FROM, verificationMail(), fast)).rejects.toMatchObject({ permanent: true });
  });

  it('starttls mode fails when the server does not offer STARTTLS', async () => {
    const smtp = await server({ tls: 'none' });
    const t = await transport(emailConfig(smtp.port, 'starttls'));
    const err = await sendRawMail(t, FROM, verificationMail(), fast).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MailSendError);
    expect(err).toMatchObject({ permanent: true, attempts: 1 });
    expect(smtp.messages).toHaveLength(0);
  });

  it('ssl mode against a server without TLS is a permanent failure', async () => {
    const smtp = await server({ tls: 'none' });
    const t = await transport(emailConfig(smtp.port, 'ssl'));
    await expect(sendRawMail(t, FROM, verificationMail(), fast)).rejects.toMatchObject({
      permanent: true,
      attempts: 1,
    });
  });

  it('a wrong password is a permanent failure', async () => {
    const smtp = await server({ tls: 'starttls', auth: AUTH });
    const t = await transport(emailConfig(smtp.port, 'starttls', { user: 'sydent', pass: 'wrong' }));
    const err = await sendRawMail(t, FROM, verificationMail(), fast).catch((e: unknown) => e);
    expect(err).toMatchObject({ permanent: true, responseCode: 535, attempts: 1 });
  });
});

/** Resolves once `check` holds, polling; fails the test after `ms`. */
async function eventually(check: () => boolean, ms = 3000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('the condition did not come true in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('the mail worker', () => {
  it('a worker that dies fails its sends in flight as temporary; the next send starts a new one and delivers', async () => {
    let release = (): void => undefined;
    const held = new Promise<void>((resolve) => (release = resolve));
    const smtp = await server({ holdData: held });
    const t = await transport(emailConfig(smtp.port, 'plain'));
    const mail = verificationMail();
    // one attempt: the send's own failure, not a retry, is what is looked at
    const pending = sendRawMail(t, FROM, mail, { ...fast, attempts: 1 }).catch((e: unknown) => e);
    await smtp.waitForMessage();
    const first = t.worker!;
    await first.terminate();
    const err = await pending;
    expect(err).toBeInstanceOf(MailSendError);
    expect(err).toMatchObject({ permanent: false, code: 'ECONNECTION', attempts: 1 });
    release();

    const again = verificationMail('bob@example.org');
    const result = await sendRawMail(t, FROM, again, fast);
    expect(result).toEqual({ messageId: again.messageId, accepted: ['bob@example.org'] });
    expect(t.worker).toBeDefined();
    expect(t.worker).not.toBe(first);
    expect((await smtp.waitForMessage((m) => m.to[0] === 'bob@example.org')).raw).toBe(again.raw);
  });

  it('a worker with nothing to send for the idle time ends with its connections; the next mail starts a new one', async () => {
    const smtp = await server({});
    const t = await transport(emailConfig(smtp.port, 'plain'), true, 1000);
    await sendRawMail(t, FROM, verificationMail(), fast);
    const first = t.worker!;
    const exited = new Promise<number>((resolve) => first.once('exit', resolve));
    // a second mail within the idle time keeps the same worker
    await new Promise((resolve) => setTimeout(resolve, 200));
    await sendRawMail(t, FROM, verificationMail('carol@example.org'), fast);
    expect(t.worker).toBe(first);
    expect(await exited).toBe(0);
    expect(t.worker).toBeUndefined();
    const again = verificationMail('bob@example.org');
    expect(await sendRawMail(t, FROM, again, fast)).toEqual({
      messageId: again.messageId,
      accepted: ['bob@example.org'],
    });
    expect(t.worker).not.toBe(first);
    expect(smtp.messages.map((m) => m.to[0])).toEqual(['alice@example.org', 'carol@example.org', 'bob@example.org']);
  });

  it('closing fails a send in flight at once and ends the worker; later sends fail', async () => {
    const smtp = await server({ holdData: new Promise(() => undefined) });
    const t = await transport(emailConfig(smtp.port, 'plain'));
    const pending = sendRawMail(t, FROM, verificationMail(), { ...fast, attempts: 1 }).catch((e: unknown) => e);
    await smtp.waitForMessage();
    const worker = t.worker!;
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
    await t.close();
    expect(await pending).toMatchObject({ permanent: false, code: 'ECONNECTION' });
    await exited;
    expect(t.worker).toBeUndefined();
    const late = await sendRawMail(t, FROM, verificationMail(), { ...fast, attempts: 1 }).catch((e: unknown) => e);
    expect(late).toMatchObject({ permanent: false, code: 'ECONNECTION' });
  });
});

/** The pool on this thread, as the mail worker runs it. */
function pool(port: number, opts: { maxConnections?: number; idleMs?: number } = {}): SmtpPool {
  const p = new SmtpPool({
    SmtpConnection,
    connection: { host: '127.0.0.1', port, ignoreTLS: true, name: 'is.example.test' },
    maxConnections: opts.maxConnections ?? 1,
    idleMs: opts.idleMs ?? 10_000,
  });
  cleanups.push(() => p.close());
  return p;
}

const ENVELOPE = { from: 'noreply@is.example.test', to: ['alice@example.org'] };

describe('the connection pool', () => {
  it('a recipient refused: the connection is reset (RSET) and carries the next message', async () => {
    const smtp = await server({ rejectTo: ['nobody@example.org'] });
    const t = await transport(emailConfig(smtp.port, 'plain'));
    const refused = await sendRawMail(t, FROM, verificationMail('nobody@example.org'), fast).catch((e: unknown) => e);
    expect(refused).toMatchObject({ permanent: true, responseCode: 550, attempts: 1 });
    const mail = verificationMail('bob@example.org');
    expect(await sendRawMail(t, FROM, mail, fast)).toEqual({
      messageId: mail.messageId,
      accepted: ['bob@example.org'],
    });
    expect(smtp.connections).toBe(1);
    expect(smtp.messages.map((m) => m.to[0])).toEqual(['bob@example.org']);
  });

  it('a connection the server dropped while it was kept: the message goes out on a new one, in the same attempt', async () => {
    const smtp = await server({ dropReused: true });
    const t = await transport(emailConfig(smtp.port, 'plain'));
    const first = verificationMail();
    await sendRawMail(t, FROM, first, fast);
    const mail = verificationMail('bob@example.org');
    // one attempt: sender.ts does not try again, the pool sent it on a new connection
    expect(await sendRawMail(t, FROM, mail, { ...fast, attempts: 1 })).toEqual({
      messageId: mail.messageId,
      accepted: ['bob@example.org'],
    });
    expect(smtp.connections).toBe(2);
    expect(smtp.messages.map((m) => m.raw)).toEqual([first.raw, mail.raw]);
  });

  it('a connection idle for the idle time is closed (QUIT); the next message opens a new one', async () => {
    const smtp = await server({});
    const p = pool(smtp.port, { idleMs: 300 });
    await p.sendMail({ envelope: ENVELOPE, raw: verificationMail().raw });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await p.sendMail({ envelope: { ...ENVELOPE, to: ['carol@example.org'] }, raw: verificationMail().raw });
    expect(smtp.connections).toBe(1);
    await eventually(() => smtp.openConnections === 0);
    expect(p.size).toBe(0);
    await p.sendMail({ envelope: { ...ENVELOPE, to: ['bob@example.org'] }, raw: verificationMail().raw });
    expect(smtp.connections).toBe(2);
    expect(smtp.messages.map((m) => m.to[0])).toEqual(['alice@example.org', 'carol@example.org', 'bob@example.org']);
  });

  it('no more connections than its bound: the other messages wait for one', async () => {
    const smtp = await server({ hold: { until: 3, maxMs: 300 } });
    const p = pool(smtp.port, { maxConnections: 2 });
    const sent = await Promise.all(
      ['a', 'b', 'c', 'd', 'e'].map((n) =>
        p.sendMail({ envelope: { ...ENVELOPE, to: [`${n}@example.org`] }, raw: `Subject: ${n}\r\n\r\n${n}\r\n` }),
      ),
    );
    expect(sent.map((s) => s.accepted[0])).toEqual(['a', 'b', 'c', 'd', 'e'].map((n) => `${n}@example.org`));
    expect(smtp.maxHeld).toBe(2);
    expect(smtp.connections).toBe(2);
  });

  it('a server that refuses one more connection: the messages wait for those it has, none fails', async () => {
    const smtp = await server({ maxClients: 2, hold: { until: 2, maxMs: 200 } });
    const p = pool(smtp.port, { maxConnections: 4 });
    // two connections up (two messages at once), then more messages than they carry: the pool tries a third
    await Promise.all(
      ['y', 'z'].map((n) =>
        p.sendMail({ envelope: { ...ENVELOPE, to: [`${n}@example.org`] }, raw: `Subject: ${n}\r\n\r\n${n}\r\n` }),
      ),
    );
    expect(p.size).toBe(2);
    const names = ['a', 'b', 'c', 'd', 'e', 'f'];
    const sent = await Promise.all(
      names.map((n) =>
        p.sendMail({ envelope: { ...ENVELOPE, to: [`${n}@example.org`] }, raw: `Subject: ${n}\r\n\r\n${n}\r\n` }),
      ),
    );
    expect(sent.map((s) => s.accepted[0])).toEqual(names.map((n) => `${n}@example.org`));
    expect(smtp.messages).toHaveLength(8);
    expect(smtp.maxHeld).toBe(2);
    // the refused ones are not tried again meanwhile
    expect(p.size).toBe(2);
  });

  it('a cancelled send: taken out of the queue if it waits, its connection closed if it runs', async () => {
    let release = (): void => undefined;
    const smtp = await server({ holdData: new Promise<void>((resolve) => (release = resolve)) });
    const p = pool(smtp.port);
    const first = p.sendMail({ envelope: ENVELOPE, raw: verificationMail().raw });
    await smtp.waitForMessage();
    // the only connection is busy: these two wait
    const waiting = new Cancellation();
    const cancelledWhileWaiting = p
      .sendMail({
        envelope: { ...ENVELOPE, to: ['carol@example.org'] },
        raw: 'Subject: c\r\n\r\nc\r\n',
        cancel: waiting,
      })
      .catch((e: unknown) => e);
    const third = p.sendMail({ envelope: { ...ENVELOPE, to: ['bob@example.org'] }, raw: 'Subject: b\r\n\r\nb\r\n' });
    waiting.abort(new Error('gave up'));
    expect(await cancelledWhileWaiting).toMatchObject({ code: 'EABORT' });
    release();
    expect(await first).toMatchObject({ accepted: ['alice@example.org'] });
    expect(await third).toMatchObject({ accepted: ['bob@example.org'] });
    expect(smtp.messages.map((m) => m.to[0])).toEqual(['alice@example.org', 'bob@example.org']);
    expect(smtp.connections).toBe(1);

    // cancelled while the server holds its answer: it fails at once, and its connection is closed
    const slow = await server({ holdData: new Promise(() => undefined) });
    const q = pool(slow.port);
    const running = new Cancellation();
    const inFlight = q
      .sendMail({ envelope: ENVELOPE, raw: verificationMail().raw, cancel: running })
      .catch((e: unknown) => e);
    await slow.waitForMessage();
    running.abort(new Error('gave up'));
    expect(await inFlight).toMatchObject({ code: 'EABORT' });
    expect(q.size).toBe(0);
    await eventually(() => slow.openConnections === 0);
  });

  it('a send cancelled while its connection opens: that connection is closed, and the next send opens its own instead of waiting for it', async () => {
    const smtp = await server({});
    // The first connection is accepted and never greeted (a hung server); the later ones reach the SMTP server.
    let accepted = 0;
    let hungClosed = false;
    const front = net.createServer((client) => {
      client.on('error', () => undefined);
      if (++accepted === 1) {
        client.on('close', () => (hungClosed = true));
        return;
      }
      const upstream = net.connect(smtp.port, '127.0.0.1');
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => front.close(() => resolve())));
    front.unref();
    const p = pool((front.address() as net.AddressInfo).port);

    const gaveUp = new Cancellation();
    const first = p
      .sendMail({ envelope: ENVELOPE, raw: verificationMail().raw, cancel: gaveUp })
      .catch((e: unknown) => e);
    await eventually(() => accepted === 1);
    gaveUp.abort(new Error('gave up'));
    expect(await first).toMatchObject({ code: 'EABORT' });
    await eventually(() => hungClosed);
    expect(p.size).toBe(0);

    // nodemailer's greeting timeout is 30 s: a send waiting for the hung connection would not be answered in this test
    expect(
      await p.sendMail({ envelope: { ...ENVELOPE, to: ['bob@example.org'] }, raw: 'Subject: b\r\n\r\nb\r\n' }),
    ).toMatchObject({ accepted: ['bob@example.org'] });
    expect(accepted).toBe(2);
    expect(smtp.messages.map((m) => m.to[0])).toEqual(['bob@example.org']);
  });
});

describe('sender helpers', () => {
  it('takes the addr-spec of email.from for the envelope', () => {
    expect(envelopeAddress('Sydent Validation <noreply@example.org>')).toBe('noreply@example.org');
    expect(envelopeAddress('"Matrix, Inc." <a@b.c>')).toBe('a@b.c');
    expect(envelopeAddress('noreply@example.org')).toBe('noreply@example.org');
  });

  it('classifies failures', () => {
    expect(isTemporaryFailure({ code: 'ECONNECTION' })).toBe(true);
    expect(isTemporaryFailure({ code: 'ETIMEDOUT' })).toBe(true);
    expect(isTemporaryFailure({ code: 'ESOCKET', originalCode: 'ECONNREFUSED' })).toBe(true);
    expect(isTemporaryFailure({ code: 'EENVELOPE', responseCode: 452 })).toBe(true);
    expect(isTemporaryFailure({ code: 'EMESSAGE', responseCode: 503 })).toBe(true);
    expect(isTemporaryFailure({ code: 'EENVELOPE', responseCode: 550 })).toBe(false);
    expect(isTemporaryFailure({ code: 'EAUTH', responseCode: 535 })).toBe(false);
    expect(isTemporaryFailure({ code: 'ETLS' })).toBe(false);
    expect(isTemporaryFailure({ code: 'ESOCKET', originalCode: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' })).toBe(false);
    expect(isTemporaryFailure({ code: 'ESOCKET', originalCode: 'ERR_TLS_CERT_ALTNAME_INVALID' })).toBe(false);
    expect(isTemporaryFailure({ code: 'ESOCKET', originalCode: 'ECONNRESET' })).toBe(true);
    expect(isTemporaryFailure(new Error('what'))).toBe(false);
  });
});

describe('the mailer supervisor', () => {
  function startMailer(email: EmailConfig, ca: string) {
    const deps = {
      config: { email, db: { engine: 'sqlite' } } as SydentConfig,
      log: pino({ level: 'silent' }),
      clock: new ManualClock(1_000_000),
    } as unknown as SystemDeps;
    const actor = createActor(createMailerSupervisor({ transport: { ca }, send: fast }), { input: deps });
    actor.start();
    cleanups.push(() => actor.stop());
    return actor;
  }

  it('send delivers through the pooled transport and answers { messageId, accepted }', async () => {
    const smtp = await server({ tls: 'starttls', auth: AUTH, failFirst: 1 });
    const mailer = startMailer(emailConfig(smtp.port, 'starttls', AUTH), (await testCertificates()).ca);
    const mails = [verificationMail('a@example.org'), verificationMail('b@example.org')];
    const results = await Promise.all(mails.map((m) => ask(mailer, 'send', { to: m.to, raw: m.raw })));
    expect(results).toEqual([
      { messageId: mails[0]?.messageId, accepted: ['a@example.org'] },
      { messageId: mails[1]?.messageId, accepted: ['b@example.org'] },
    ]);
    expect(smtp.messages.map((m) => m.to[0]).sort()).toEqual(['a@example.org', 'b@example.org']);
    await ask(mailer, 'DRAIN', {});
  });

  it('send rejects with MailSendError', async () => {
    const smtp = await server({ rejectAll: true });
    const mailer = startMailer(emailConfig(smtp.port, 'plain'), (await testCertificates()).ca);
    const mail = verificationMail();
    await expect(ask(mailer, 'send', { to: mail.to, raw: mail.raw })).rejects.toMatchObject({
      name: 'MailSendError',
      permanent: true,
    });
  });
});

describe('mail errors never carry addresses', () => {
  it('takes addresses out of SMTP refusals before they reach logs or the debug endpoint', () => {
    expect(withoutAddresses('550 5.1.1 <alice.smith@example.org>: Recipient address rejected')).toBe(
      '550 5.1.1 <[address]>: Recipient address rejected',
    );
    expect(withoutAddresses("Can't send mail - all recipients were rejected: 550 bob@example.org unknown")).toBe(
      "Can't send mail - all recipients were rejected: 550 [address] unknown",
    );
    const err = Object.assign(new Error('Recipient command failed: 550 <carol@example.net> no mailbox'), {
      responseCode: 550,
    });
    const mailError = toMailSendError(err, 1);
    expect(mailError.message).not.toContain('carol@example.net');
    expect(mailError.permanent).toBe(true);
  });
});
