/**
 * Small helpers for the end-to-end tests of email 3PID validation: HTTP calls that keep status, body and
 * headers; reading what a mail carries (its link and token); reading rows from the server's SQLite file.
 */
import net from 'node:net';
import { rows } from './rows.js';
import type { ReceivedMail } from './smtp.js';

export interface Reply {
  status: number;
  headers: Headers;
  /** the body parsed as JSON when it is JSON, else {} */
  json: Record<string, unknown>;
  text: string;
}

export interface CallOptions {
  method?: string;
  /** sent as JSON unless `form` */
  body?: unknown;
  /** send `body` (a flat object) as application/x-www-form-urlencoded */
  form?: boolean;
  /** Authorization: Bearer <token> */
  token?: string;
  /** `fetch`'s redirect mode; 'manual' to see a 302 */
  redirect?: 'manual' | 'follow' | 'error';
  /** more request headers (X-Forwarded-For from a load balancer) */
  headers?: Record<string, string>;
}

export async function call(url: string, opts: CallOptions = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...opts.headers };
  let body: string | undefined;
  if (opts.body !== undefined) {
    if (opts.form) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(opts.body as Record<string, string>).toString();
    } else {
      headers['content-type'] = 'application/json';
      body = typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body);
    }
  }
  if (opts.token) headers['authorization'] = `Bearer ${opts.token}`;
  const res = await fetch(url, {
    method: opts.method ?? (body === undefined ? 'GET' : 'POST'),
    headers,
    body,
    redirect: opts.redirect ?? 'manual',
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  if ((res.headers.get('content-type') ?? '').includes('application/json')) {
    json = JSON.parse(text) as Record<string, unknown>;
  }
  return { status: res.status, headers: res.headers, json, text };
}

/** The submitToken link of a verification mail (first occurrence: the text part, not HTML-escaped). */
export function mailLink(mail: ReceivedMail | string): URL {
  const raw = typeof mail === 'string' ? mail : mail.raw;
  const m = /https?:\/\/[^\s"<>]+\/validate\/email\/submitToken\?[^\s"<>]+/.exec(raw);
  if (!m) throw new Error(`no submitToken link in the mail:\n${raw}`);
  return new URL(m[0]);
}

/** The token in the mail's link. */
export function mailToken(mail: ReceivedMail | string): string {
  const token = mailLink(mail).searchParams.get('token');
  if (!token) throw new Error('the link has no token');
  return token;
}

export interface SessionRow {
  id: number;
  medium: string;
  address: string;
  clientSecret: string;
  validated: number;
  mtime: number;
}

export interface TokenRow {
  id: number;
  validationSession: number;
  token: string;
  sendAttemptNumber: number;
}

export const sessionRows = (dbFile: string): SessionRow[] =>
  rows<SessionRow>(dbFile, 'SELECT * FROM threepid_validation_sessions ORDER BY id');

export const tokenRows = (dbFile: string): TokenRow[] =>
  rows<TokenRow>(dbFile, 'SELECT * FROM threepid_token_auths ORDER BY id');

/** The session rows Sydent would read, for one sid. */
export function sessionOf(dbFile: string, sid: string | number): { session?: SessionRow; tokens: TokenRow[] } {
  const id = Number(sid);
  return {
    session: rows<SessionRow>(dbFile, 'SELECT * FROM threepid_validation_sessions WHERE id = ?', id)[0],
    tokens: rows<TokenRow>(dbFile, 'SELECT * FROM threepid_token_auths WHERE validationSession = ?', id),
  };
}

/** Every session and token row: what a refused request must leave as it was. */
export function sessionsAndTokens(dbFile: string): { sessions: SessionRow[]; tokens: TokenRow[] } {
  return { sessions: sessionRows(dbFile), tokens: tokenRows(dbFile) };
}

/** `[email]` settings pointing at a loopback SMTP server, with a sender limit that tests will not reach. */
export function emailConf(smtpPort: number, extra: Record<string, string> = {}): Record<string, string> {
  return {
    'email.smtphost': '127.0.0.1',
    'email.smtpport': String(smtpPort),
    'email.from': 'Example IS <noreply@is.example.test>',
    'email.hostname': 'mail.is.example.test',
    'email.ratelimit_sender.burst': '1000',
    ...extra,
  };
}

/**
 * Whether an envelope recipient is `typed`: the local part exactly as typed, the domain in any case
 * (nodemailer lower-cases the domain of envelope addresses; domains are case-insensitive, RFC 5321 §2.4).
 */
export function sameMailbox(recipient: string, typed: string): boolean {
  const at = (s: string) => s.lastIndexOf('@');
  const [a, b] = [at(recipient), at(typed)];
  return (
    recipient.slice(0, a) === typed.slice(0, b) &&
    recipient.slice(a + 1).toLowerCase() === typed.slice(b + 1).toLowerCase()
  );
}

/** Every line of a raw message ends with CRLF: no bare LF, no bare CR. */
export function hasOnlyCrlf(raw: string): boolean {
  return !/[^\r]\n|\r[^\n]|^\n/.test(raw) && raw.endsWith('\r\n');
}

/**
 * A TCP port that forwards to another while `up`: an SMTP server that can be "down" (connection refused) and
 * then come back on the same port.
 */
export interface Forwarder {
  port: number;
  up(): Promise<void>;
  down(): Promise<void>;
}

export async function portForwarder(port: number, target: () => number): Promise<Forwarder> {
  let server: net.Server | null = null;
  const sockets = new Set<net.Socket>();
  return {
    port,
    up: () =>
      new Promise<void>((resolve, reject) => {
        const s = net.createServer((client) => {
          const upstream = net.connect(target(), '127.0.0.1');
          sockets.add(client).add(upstream);
          client.pipe(upstream).pipe(client);
          const end = () => {
            client.destroy();
            upstream.destroy();
          };
          client.on('error', end).on('close', end);
          upstream.on('error', end).on('close', end);
        });
        s.once('error', reject);
        s.listen(port, '127.0.0.1', () => {
          server = s;
          resolve();
        });
      }),
    down: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        sockets.clear();
        if (!server) return resolve();
        server.close(() => resolve());
        server = null;
      }),
  };
}

/**
 * A requestToken in flight: its reply, stamped with the moment it came (in an object, because a promise an async
 * function returns is waited for).
 */
export interface HangingRequest {
  reply: Promise<Reply & { at: number }>;
}

/**
 * A requestToken whose mail hangs at `silent` (startSilentServer): resolves once the mail is under way, with the
 * request still unanswered.
 */
export async function hangingRequestToken(
  url: string,
  silent: { connections(): number },
  clientSecret: string,
): Promise<HangingRequest> {
  const reply = call(url, { body: { client_secret: clientSecret, email: 'hang@example.org', send_attempt: 1 } }).then(
    (r) => ({ ...r, at: Date.now() }),
  );
  const deadline = Date.now() + 10_000;
  while (silent.connections() === 0) {
    if (Date.now() > deadline) {
      reply.catch(() => undefined);
      throw new Error('the mail was never under way');
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return { reply };
}
