import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { SydentConfig } from '../src/config/types.js';
import {
  composeMail,
  decodeHeaderValue,
  encodeHeaderValue,
  formatMailDate,
  InvalidEmailAddressError,
  makeMessageId,
  toCrlf,
} from '../src/mail/message.js';
import { pyQuote } from '../src/mail/quote.js';
import { resolveTemplate } from '../src/mail/templates.js';

const email = { from: 'Sydent Validation <noreply@is.example.test>', hostname: 'is.example.test' };
const NOW = Date.UTC(2026, 10, 26, 19, 46, 59, 123);

const shipped = {
  general: { templatesPath: path.resolve('config/templates'), validBrands: ['matrix-org'], brandDefault: 'matrix-org' },
  email: { template: null, inviteTemplate: null },
  http: { verifyResponseTemplate: null },
} as unknown as SydentConfig;

/** headers (unfolded) and the body of a raw message */
function split(raw: string): { headers: Map<string, string>; body: string } {
  const end = raw.indexOf('\r\n\r\n');
  const headers = new Map<string, string>();
  for (const line of raw
    .slice(0, end)
    .replace(/\r\n[ \t]+/g, ' ')
    .split('\r\n')) {
    const colon = line.indexOf(':');
    headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
  }
  return { headers, body: raw.slice(end + 4) };
}

describe('message pieces', () => {
  it("formats the date like Python's formatdate(localtime=False)", () => {
    expect(formatMailDate(NOW)).toBe('Thu, 26 Nov 2026 19:46:59 -0000');
    expect(formatMailDate(0)).toBe('Thu, 01 Jan 1970 00:00:00 -0000');
    expect(formatMailDate(Date.UTC(2024, 1, 29, 3, 4, 5))).toBe('Thu, 29 Feb 2024 03:04:05 -0000');
  });

  it("makes Sydent's Message-ID: <ms + 16 letters @ hostname>", () => {
    const id = makeMessageId('is.example.test', NOW);
    expect(id).toMatch(new RegExp(`^<${NOW}[A-Za-z]{16}@is\\.example\\.test>$`));
    expect(makeMessageId('h', NOW)).not.toBe(makeMessageId('h', NOW));
  });

  it('normalises every line ending to CRLF', () => {
    expect(toCrlf('a\nb\r\nc\rd\n\n')).toBe('a\r\nb\r\nc\r\nd\r\n\r\n');
  });

  it('RFC 2047-encodes a subject like Python Header(s, "utf8")', () => {
    expect(encodeHeaderValue('Confirm your email address for Matrix')).toBe(
      '=?utf8?q?Confirm_your_email_address_for_Matrix?=',
    );
    expect(encodeHeaderValue('')).toBe('');
  });

  it.each([
    "Alice (@alice:example.org) has invited you to Bob's room, which has a rather long name",
    'Ünïcødé 日本語 invitation from Strauß with a long long subject that must be folded somewhere',
    '🙂'.repeat(40),
    'Hi\r\nBcc: victim@example.org',
    '=?utf8?q?not_decoded?= _ ? =',
  ])('encodes and decodes %j', (subject) => {
    const encoded = encodeHeaderValue(subject);
    expect(decodeHeaderValue(encoded)).toBe(subject);
    const words = encoded.split('\r\n ');
    for (const w of words) {
      expect(w.length).toBeLessThanOrEqual(75);
      expect(w).toMatch(/^=\?utf8\?[qb]\?[!-~]+\?=$/);
    }
    // nothing but the folding may break the line
    expect(encoded.replaceAll('\r\n ', '')).not.toMatch(/[\r\n]/);
  });
});

describe('composeMail', () => {
  it("adds Sydent's variables, renders and uses CRLF", () => {
    const t = resolveTemplate(shipped, 'matrix-org', 'verification_template.eml');
    const link =
      'https://is.example.test/_matrix/identity/api/v1/validate/email/submitToken?token=T0K3N&client_secret=s3cret&sid=7';
    const mail = composeMail(
      t,
      'alice@example.org',
      { link, token: 'T0K3N', ipaddress: '203.0.113.9' },
      { email, now: NOW },
    );
    expect(mail.to).toBe('alice@example.org');
    expect(mail.messageId).toMatch(new RegExp(`^<${NOW}[A-Za-z]{16}@is\\.example\\.test>$`));
    expect(mail.raw).not.toMatch(/[^\r]\n/);
    expect(mail.raw).not.toMatch(/\r(?!\n)/);
    expect(mail.raw.endsWith('--\r\n')).toBe(true);

    const { headers, body } = split(mail.raw);
    expect(headers.get('date')).toBe('Thu, 26 Nov 2026 19:46:59 -0000');
    expect(headers.get('from')).toBe('Sydent Validation <noreply@is.example.test>');
    expect(headers.get('to')).toBe('alice@example.org');
    expect(headers.get('message-id')).toBe(mail.messageId);
    expect(headers.get('mime-version')).toBe('1.0');
    expect(headers.get('subject')).toBeTruthy();
    const boundary = /boundary="([A-Za-z0-9]{32})"/.exec(headers.get('content-type') ?? '')?.[1];
    expect(boundary).toBeDefined();
    expect(headers.get('content-type')).toMatch(/^multipart\/alternative;/);

    const parts = body.split(`--${boundary}`);
    expect(parts).toHaveLength(4); // preamble, text, html, epilogue after the closing --
    expect(parts[3]).toBe('--\r\n');
    const [text, html] = [parts[1] ?? '', parts[2] ?? ''];
    expect(text).toContain('Content-Type: text/plain; charset=UTF-8');
    expect(text).toContain(`\r\n${link}\r\n`); // |safe in the text part
    expect(text).toContain('T0K3N');
    expect(html).toContain('Content-Type: text/html; charset=UTF-8');
    expect(html).toContain(`href="${link.replaceAll('&', '&amp;')}"`);
    expect(html).not.toContain('%%');
  });

  it("renders the shipped invite with the link on line 22 and the caller's sign URL", () => {
    const t = resolveTemplate(shipped, null, 'invite_template.eml');
    const subs = {
      subject_header_value: encodeHeaderValue("Bob's Emporium of Messages invited you"),
      sender_display_name: "Bob's Emporium of Messages",
      bracketed_verified_sender: '(@bob:example.org) ',
      room_type: '',
      bracketed_room_name: '(Room <1>) ',
      room_name: 'Room <1>',
      web_client_location: 'https://app.element.io',
      room_id: '!abc:example.org',
      token: 'TokenABC',
      ephemeral_private_key: 'k-y_Z',
      room_avatar_url: 'mxc://example.org/av',
      guest_access_token: '',
      guest_user_id: '',
      sign_url: 'https://is.example.test/_matrix/identity/api/v1/sign-ed25519',
    };
    const mail = composeMail(t, 'Alice+x@example.org', subs, { email, now: NOW });
    const lines = mail.raw.split('\r\n');
    const q = pyQuote;
    expect(lines[22]).toBe(
      `https://app.element.io/#/room/${q(subs.room_id)}?email=${q('Alice+x@example.org')}` +
        '&signurl=https%3A%2F%2Fis.example.test%2F_matrix%2Fidentity%2Fapi%2Fv1%2Fsign-ed25519' +
        '%3Ftoken%3DTokenABC%26private_key%3Dk-y_Z' +
        `&room_name=${q('Room <1>')}&room_avatar_url=${q('mxc://example.org/av')}` +
        `&inviter_name=${q("Bob's Emporium of Messages")}&guest_access_token=&guest_user_id=&room_type=`,
    );
    expect(mail.raw).toContain('Bob&#39;s Emporium of Messages'); // the HTML part, escaped as Jinja2 does
    expect(mail.raw).toContain('(Room &lt;1&gt;)');
    expect(mail.raw).toContain('a Matrix room');
    expect(split(mail.raw).headers.get('subject')).toBe(subs.subject_header_value.replace('\r\n ', ' '));
    const space = composeMail(t, 'a@example.org', { ...subs, room_type: 'm.space' }, { email, now: NOW });
    expect(space.raw).toContain('a Matrix space');
    expect(space.raw.split('\r\n')[22]).toMatch(/&room_type=m.space$/);
  });

  it('refuses a recipient that is not a bare address (header injection)', () => {
    const t = resolveTemplate(shipped, null, 'verification_template.eml');
    for (const to of ['a@example.org\r\nBcc: b@example.org', 'Alice <a@example.org>', 'foo', 'a@b, c@d']) {
      expect(() => composeMail(t, to, { link: 'l', token: 't' }, { email })).toThrow(InvalidEmailAddressError);
    }
  });

  it("Sydent's variables override the caller's", () => {
    const t = resolveTemplate(shipped, null, 'verification_template.eml');
    const mail = composeMail(
      t,
      'a@example.org',
      { link: 'l', token: 't', to: 'evil@example.org', date: 'x' },
      { email, now: NOW },
    );
    expect(split(mail.raw).headers.get('to')).toBe('a@example.org');
    expect(split(mail.raw).headers.get('date')).toBe('Thu, 26 Nov 2026 19:46:59 -0000');
  });
});
