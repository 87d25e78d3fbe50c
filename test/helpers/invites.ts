/**
 * Third-party invite helpers for the invite-*.test.ts files: a store-invite body like Synapse's, the invite mail
 * read as an invitee's client would (decoded subject, text part, the link and what is inside it), and the rows
 * store-invite leaves. Independent of src/ except for the crypto primitives.
 *
 *   const res = await storeInvite(t, 'v1', inviteBody({ address: 'bob@example.com' }));
 *   const mail = await smtp.waitForMessage((m) => m.to.includes('bob@example.com'));
 *   const invite = readInviteMail(mail);   // subject, text, link, token, privateKey, signUrl
 */
import { call, type Reply } from './email.js';
import { type Api } from './flows.js';
import { rows } from './rows.js';
import type { TestServer } from './server.js';
import type { ReceivedMail } from './smtp.js';

export const V1 = '/_matrix/identity/api/v1';
export const V2 = '/_matrix/identity/v2';

export const storeInviteUrl = (t: TestServer, api: Api): string => t.url(`${api === 'v1' ? V1 : V2}/store-invite`);

/** `POST …/store-invite` */
export function storeInvite(t: TestServer, api: Api, body: unknown, token?: string): Promise<Reply> {
  return call(storeInviteUrl(t, api), { body, token });
}

/** What Synapse sends for an invite to `address` (every field may be overridden, `undefined` removes it). */
export function inviteBody(over: Record<string, unknown> = {}): Record<string, unknown> {
  const body: Record<string, unknown> = {
    medium: 'email',
    address: 'invitee@example.com',
    room_id: '!room:hs.test',
    sender: '@alice:hs.test',
    room_name: 'Tea Room',
    room_avatar_url: 'mxc://hs.test/avatar',
    room_join_rules: 'invite',
    sender_display_name: 'Alice',
    sender_avatar_url: 'mxc://hs.test/alice',
    ...over,
  };
  for (const [k, v] of Object.entries(body)) if (v === undefined) delete body[k];
  return body;
}

/** Decodes RFC 2047 encoded-words (B and Q, utf-8) after unfolding; ASCII text is kept. */
export function decodeRfc2047(value: string): string {
  const unfolded = value.replace(/\r?\n[ \t]/g, ' ');
  // whitespace between two adjacent encoded-words is not part of the text (RFC 2047 §6.2)
  const joined = unfolded.replace(/(\?=)[ \t]+(?==\?)/g, '$1');
  return joined.replace(/=\?([^?]+)\?([bBqQ])\?([^?]*)\?=/g, (_m, _charset: string, enc: string, text: string) => {
    if (enc.toLowerCase() === 'b') return Buffer.from(text, 'base64').toString('utf8');
    const bytes = text
      .replace(/_/g, ' ')
      .replace(/=([0-9A-Fa-f]{2})/g, (_x, h: string) => String.fromCharCode(parseInt(h, 16)));
    return Buffer.from(bytes, 'latin1').toString('utf8');
  });
}

/** The headers of a raw message (unfolded, names lower-cased; the first occurrence of each). */
export function mailHeaders(raw: string): Record<string, string> {
  const head = raw.split(/\r\n\r\n/, 1)[0] ?? '';
  const out: Record<string, string> = {};
  for (const line of head.replace(/\r\n[ \t]/g, ' ').split('\r\n')) {
    const i = line.indexOf(':');
    if (i <= 0) continue;
    const name = line.slice(0, i).toLowerCase();
    out[name] ??= line.slice(i + 1).trim();
  }
  return out;
}

/** The body of the first part with this content type of a multipart message. */
export function mailPart(raw: string, contentType: 'text/plain' | 'text/html'): string {
  const boundary = /boundary="([^"]+)"/.exec(raw)?.[1];
  if (!boundary) throw new Error(`no multipart boundary in:\n${raw}`);
  for (const part of raw.split(`--${boundary}`)) {
    const [head, ...body] = part.split('\r\n\r\n');
    if (head && new RegExp(`Content-Type: ${contentType}`, 'i').test(head)) return body.join('\r\n\r\n');
  }
  throw new Error(`no ${contentType} part in:\n${raw}`);
}

export interface InviteMail {
  /** the decoded Subject */
  subject: string;
  /** the text/plain part */
  text: string;
  /** the text/html part */
  html: string;
  /** the join link of the text part, as written */
  link: string;
  /** what precedes `/#/room/` */
  webClientLocation: string;
  /** the room id in the link's path, decoded */
  roomId: string;
  /** the link's parameters after the `?` of the fragment, decoded */
  params: URLSearchParams;
  /** the sign URL (`signurl`), decoded */
  signUrl: URL;
  token: string;
  /** the ephemeral private key (the seed), as in the link */
  privateKey: string;
}

/** Reads an invite mail: the subject, both parts, the join link and the token and key inside it. */
export function readInviteMail(mail: ReceivedMail | string): InviteMail {
  const raw = typeof mail === 'string' ? mail : mail.raw;
  const subject = decodeRfc2047(mailHeaders(raw)['subject'] ?? '');
  const text = mailPart(raw, 'text/plain');
  const html = mailPart(raw, 'text/html');
  const link = text.split('\r\n').find((l) => l.includes('/#/room/'));
  if (!link) throw new Error(`no join link in the text part:\n${text}`);
  const at = link.indexOf('/#/room/');
  const webClientLocation = link.slice(0, at);
  const rest = link.slice(at + '/#/room/'.length);
  const q = rest.indexOf('?');
  const roomId = decodeURIComponent(rest.slice(0, q));
  const params = new URLSearchParams(rest.slice(q + 1));
  const signUrl = new URL(params.get('signurl') ?? '');
  const token = signUrl.searchParams.get('token') ?? '';
  const privateKey = signUrl.searchParams.get('private_key') ?? '';
  return { subject, text, html, link, webClientLocation, roomId, params, signUrl, token, privateKey };
}

/** Python's `urllib.parse.quote(s)` (safe `/`), which the template's `urlencode` matches. */
export function pyQuote(s: string): string {
  return Array.from(new TextEncoder().encode(s))
    .map((b) => {
      const c = String.fromCharCode(b);
      return /[A-Za-z0-9_.\-~/]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
    })
    .join('');
}

export interface InviteTokenRow {
  id: number;
  medium: string;
  address: string;
  room_id: string;
  sender: string;
  token: string;
  received_ts: number | null;
  sent_ts: number | null;
}

export interface EphemeralKeyRow {
  id: number;
  public_key: string;
  verify_count: number;
  persistence_ts: number | null;
}

export const inviteTokenRows = (t: TestServer): InviteTokenRow[] =>
  rows<InviteTokenRow>(t, 'SELECT * FROM invite_tokens ORDER BY id');

export const ephemeralKeyRows = (t: TestServer): EphemeralKeyRow[] =>
  rows<EphemeralKeyRow>(t, 'SELECT * FROM ephemeral_public_keys ORDER BY id');

/** Row counts of both invite tables: to show that a refused invite stored nothing. */
export function inviteCounts(t: TestServer): { tokens: number; keys: number } {
  return { tokens: inviteTokenRows(t).length, keys: ephemeralKeyRows(t).length };
}
