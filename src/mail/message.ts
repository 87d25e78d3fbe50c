import type { EmailConfig } from '../config/types.js';
import { ALPHANUMERIC, LETTERS, randomString } from '../crypto/random.js';
import { checkEmailAddress } from '../matrix/index.js';
import { renderTemplateCrlf, templateAt, type ResolvedTemplate } from './templates.js';

/**
 * A whole mail from a template, as Sydent's `sendEmail` builds it: the template is the complete RFC 5322
 * message (headers included), rendered with the caller's variables plus `messageid`, `date`, `to`, `from` and,
 * for every template, `multipart_boundary`. The result goes out as 8-bit UTF-8 with CRLF line endings.
 */

export class InvalidEmailAddressError extends Error {
  constructor(
    readonly address: string,
    readonly reason: string,
  ) {
    super(`invalid email address: ${reason}`);
    this.name = 'InvalidEmailAddressError';
  }
}

export interface ComposedMail {
  /** the RFC 5322 message, CRLF line endings, ending with CRLF */
  raw: string;
  /** the recipient, as given */
  to: string;
  /** the `messageid` variable (`<…@hostname>`) */
  messageId: string;
}

export interface ComposeOptions {
  /** `email.from` and `email.hostname` */
  email: Pick<EmailConfig, 'from' | 'hostname'>;
  /** milliseconds since the epoch, for `date` and `messageid`; the system time when absent */
  now?: number;
}

/** The variables Sydent adds to every mail; they override the caller's of the same name. */
export interface SydentMailVariables {
  messageid: string;
  date: string;
  to: string;
  from: string;
  multipart_boundary: string;
}

export function sydentMailVariables(
  email: Pick<EmailConfig, 'from' | 'hostname'>,
  to: string,
  nowMs: number,
): SydentMailVariables {
  return {
    messageid: makeMessageId(email.hostname, nowMs),
    date: formatMailDate(nowMs),
    to,
    from: email.from,
    multipart_boundary: randomString(32, ALPHANUMERIC),
  };
}

/**
 * Renders `template` for `to` and returns the raw message. The recipient must be a bare addr-spec
 * (InvalidEmailAddressError otherwise: it lands in the `To:` header). Template errors are TemplateError.
 */
export function composeMail(
  template: ResolvedTemplate | string,
  to: string,
  substitutions: Readonly<Record<string, string>>,
  opts: ComposeOptions,
): ComposedMail {
  const check = checkEmailAddress(to);
  if (!check.ok) throw new InvalidEmailAddressError(to, check.reason);
  const t = typeof template === 'string' ? templateAt(template) : template;
  const extra = sydentMailVariables(opts.email, to, opts.now ?? Date.now());
  // not `{ ...substitutions, ...extra }`: V8 builds a new map for each property added to a spread copy (bench/README.md)
  const vars = Object.assign({}, substitutions, extra);
  const rendered = renderTemplateCrlf(t, vars, { noVariants: ['multipart_boundary'] });
  // Jinja2 drops the template's last newline; SMTP needs the message to end with one (smtplib added it too)
  const raw = rendered.endsWith('\r\n') ? rendered : `${rendered}\r\n`;
  return { raw, to, messageId: extra.messageid };
}

/** Sydent's Message-ID: `<` milliseconds, 16 random ASCII letters, `@` email.hostname `>`. */
export function makeMessageId(hostname: string, nowMs: number): string {
  return `<${Math.floor(nowMs)}${randomString(16, LETTERS)}@${hostname}>`;
}

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number): string => String(n).padStart(2, '0');

/** Python's `email.utils.formatdate(t, localtime=False)`: `Thu, 26 Nov 2026 19:46:59 -0000` (UTC). */
export function formatMailDate(ms: number): string {
  const d = new Date(Math.floor(ms / 1000) * 1000);
  return (
    `${DAYS[d.getUTCDay()]}, ${two(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ` +
    `${String(d.getUTCFullYear()).padStart(4, '0')} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:` +
    `${two(d.getUTCSeconds())} -0000`
  );
}

export { toCrlf } from './crlf.js';

// RFC 2047 ---------------------------------------------------------------------------------------------------

const Q_SAFE = /^[A-Za-z0-9\-!*+/]$/;
const MAX_WORD = 75; // RFC 2047 §2: an encoded-word is at most 75 characters
const encoder = new TextEncoder();

/**
 * A header value as RFC 2047 encoded-words, like Python's `email.header.Header(s, 'utf8').encode()`:
 * charset label `utf8`, Q or B encoding, whichever is shorter for the whole text, words of at most 75 characters
 * joined by a folding `\r\n ` (CRLF + space). Always encoded, even when ASCII, so no character of `s` (CR, LF)
 * can end the header. `''` stays `''`.
 */
export function encodeHeaderValue(s: string): string {
  if (s === '') return '';
  const chars = [...s].map((c) => encoder.encode(c));
  const qLen = chars.reduce((n, bytes) => n + qCost(bytes), 0);
  const total = chars.reduce((n, bytes) => n + bytes.length, 0);
  const bLen = Math.ceil(total / 3) * 4;
  const useB = bLen < qLen;
  const prefix = useB ? '=?utf8?b?' : '=?utf8?q?';
  const room = MAX_WORD - prefix.length - 2;
  const words: string[] = [];
  let chunk: number[] = [];
  let cost = 0;
  const flush = (): void => {
    if (chunk.length === 0) return;
    const bytes = Uint8Array.from(chunk);
    words.push(`${prefix}${useB ? Buffer.from(bytes).toString('base64') : qEncode(bytes)}?=`);
    chunk = [];
    cost = 0;
  };
  for (const bytes of chars) {
    // a character is never split between words (RFC 2047 §5)
    const next = useB ? Math.ceil((chunk.length + bytes.length) / 3) * 4 : cost + qCost(bytes);
    if (next > room) flush();
    chunk.push(...bytes);
    cost = useB ? Math.ceil(chunk.length / 3) * 4 : cost + qCost(bytes);
  }
  flush();
  return words.join('\r\n ');
}

function qCost(bytes: Uint8Array): number {
  let n = 0;
  for (const b of bytes) n += b === 0x20 || Q_SAFE.test(String.fromCharCode(b)) ? 1 : 3;
  return n;
}

function qEncode(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) {
    const c = String.fromCharCode(b);
    if (b === 0x20) out += '_';
    else if (b < 0x80 && Q_SAFE.test(c)) out += c;
    else out += `=${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** Decodes RFC 2047 encoded-words (utf-8/utf8, Q or B) and unfolds: for tests and logs. */
export function decodeHeaderValue(s: string): string {
  const unfolded = s.replace(/\?=\r?\n[ \t]+=\?/g, '?==?');
  return unfolded.replace(/=\?([^?]+)\?([qQbB])\?([^?]*)\?=/g, (_m, _charset: string, enc: string, text: string) => {
    if (enc.toLowerCase() === 'b') return Buffer.from(text, 'base64').toString('utf8');
    const bytes: number[] = [];
    for (let i = 0; i < text.length; i++) {
      const c = text[i] ?? '';
      if (c === '_') bytes.push(0x20);
      else if (c === '=' && /^[0-9A-Fa-f]{2}$/.test(text.slice(i + 1, i + 3))) {
        bytes.push(parseInt(text.slice(i + 1, i + 3), 16));
        i += 2;
      } else bytes.push(c.charCodeAt(0));
    }
    return Buffer.from(bytes).toString('utf8');
  });
}
