import nodemailer, { type Transporter } from 'nodemailer';
import type { EmailConfig } from '../config/types.js';

/**
 * The pooled SMTP transport for Sydent's `[email]` settings. Certificates are always verified (Sydent ≥ 2.5.6);
 * `plain` never upgrades, as Sydent's plaintext mode never issues STARTTLS.
 */
export function createSmtpTransport(email: EmailConfig): Transporter {
  return nodemailer.createTransport({
    pool: true,
    maxConnections: 4,
    host: email.smtpHost,
    port: email.smtpPort,
    name: email.hostname,
    secure: email.tlsMode === 'ssl',
    requireTLS: email.tlsMode === 'starttls',
    ignoreTLS: email.tlsMode === 'plain',
    auth: email.smtpUsername ? { user: email.smtpUsername, pass: email.smtpPassword } : undefined,
    connectionTimeout: 15_000,
    greetingTimeout: 15_000,
    socketTimeout: 30_000,
  });
}
