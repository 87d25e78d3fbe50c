import type { EmailConfig } from '../config/types.js';
import { MAIL_WORKER_IDLE_MS, WorkerTransport } from './worker-transport.js';

/**
 * SMTP connections kept open to the mail server, and so mails sent at once (the mailer runs as many sends as
 * this). Each mail is at least two round trips on its connection (the envelope, pipelined when the server offers
 * PIPELINING, then the message), so at many concurrent requestTokens the connections, not the CPU, bound the rate.
 * Sydent opened a connection per mail, without a bound.
 */
export const SMTP_CONNECTIONS = 32;

export interface SmtpTransportOptions {
  /**
   * Extra CA certificates (PEM) to trust for the SMTP server. Only the tests use this, to trust the CA they
   * make for their loopback server: operators' SMTP servers have publicly trusted certificates (Sydent used
   * `ssl.create_default_context()`, the system's CAs), so there is no config key for it.
   */
  ca?: string;
  /** how long the mail worker may go without a mail before it is ended (MAIL_WORKER_IDLE_MS; tests shorten it) */
  idleMs?: number;
}

/**
 * The pooled SMTP transport for Sydent's `[email]` settings:
 * - `plain`: never STARTTLS, even when the server offers it (Sydent's plaintext `SMTP()` never upgraded);
 * - `starttls`: STARTTLS is required, a server that does not offer it fails the send;
 * - `ssl` (Sydent's `SSL`/`TLS`): implicit TLS from the first byte (`SMTP_SSL`).
 * Certificates are always verified, host name included (Sydent ≥ 2.5.6). Login only when a user name is set.
 */
export function createSmtpTransport(email: EmailConfig, opts: SmtpTransportOptions = {}): WorkerTransport {
  const tlsMode = email.tlsMode;
  const idleMs = opts.idleMs ?? MAIL_WORKER_IDLE_MS;
  // nodemailer loads in the mail worker, with the first mail.
  return new WorkerTransport(
    {
      maxConnections: SMTP_CONNECTIONS,
      // a connection left idle while others carry the mail is closed as the worker would be
      idleMs,
      auth: email.smtpUsername ? { user: email.smtpUsername, pass: email.smtpPassword } : undefined,
      connection: {
        host: email.smtpHost,
        port: email.smtpPort,
        name: email.hostname,
        secure: tlsMode === 'ssl',
        requireTLS: tlsMode === 'starttls',
        ignoreTLS: tlsMode === 'plain',
        tls: {
          rejectUnauthorized: true,
          minVersion: 'TLSv1.2',
          ...(opts.ca ? { ca: opts.ca } : {}),
        },
        connectionTimeout: 15_000,
        greetingTimeout: 15_000,
        socketTimeout: 30_000,
      },
    },
    idleMs,
  );
}
