import { describe, expect, it } from 'vitest';
import { checkEmailAddress } from '../src/matrix/email-address.js';

const reason = (s: string): string => {
  const r = checkEmailAddress(s);
  if (r.ok) throw new Error(`${JSON.stringify(s)} was accepted`);
  return r.reason;
};

describe('checkEmailAddress: accepted', () => {
  it.each([
    'alice@example.com',
    'a@b',
    'first.last@sub.example.co.uk',
    "o'brien+tag@example.com",
    "!#$%&'*+-/=?^_`{|}~@example.com",
    '"john doe"@example.com',
    '"a@b"@example.com',
    '"quoted\\"pair"@example.com',
    '"tab\there"@example.com',
    '""@example.com',
    'user@[127.0.0.1]',
    'user@[IPv6:2001:db8::1]',
    'Strauß@Bücher.example',
    '用户@例子.广告',
    'δοκιμή@παράδειγμα.δοκιμή',
    '𐐀@example.com',
    'x@localhost',
  ])('%s', (s) => {
    expect(checkEmailAddress(s)).toEqual({ ok: true });
  });

  it('accepts a local part of exactly 64 octets and an address of 254', () => {
    expect(checkEmailAddress(`${'a'.repeat(64)}@example.com`).ok).toBe(true);
    const domain = `${'d'.repeat(63)}.${'d'.repeat(63)}.${'d'.repeat(63)}.${'d'.repeat(57)}`;
    const addr = `${'a'.repeat(4)}@${domain}`;
    expect(Buffer.byteLength(addr)).toBe(254);
    expect(checkEmailAddress(addr).ok).toBe(true);
  });
});

describe('checkEmailAddress: refused', () => {
  it('display names and angle brackets', () => {
    expect(reason('Alice <alice@example.com>')).toMatch(/angle brackets/);
    expect(reason('<alice@example.com>')).toMatch(/angle brackets/);
    expect(reason('"<a>"@example.com')).toMatch(/angle brackets/);
  });

  it('CR, LF and control characters (header injection)', () => {
    expect(reason('a@example.com\r\nBcc: victim@example.com')).toMatch(/line break/);
    expect(reason('a@example.com\n')).toMatch(/line break/);
    expect(reason('"a\rb"@example.com')).toMatch(/line break/);
    expect(reason('a\x00b@example.com')).toMatch(/control/);
    expect(reason('a\x7f@example.com')).toMatch(/control/);
    expect(reason('a\u0085@example.com')).toMatch(/control/);
    expect(reason('a@exa\u2028mple.com')).toMatch(/control/);
    expect(reason('"a\x1bb"@example.com')).toMatch(/control/);
  });

  it('white space outside quotes', () => {
    expect(reason('a b@example.com')).toMatch(/white space/);
    expect(reason(' a@example.com')).toMatch(/white space/);
    expect(reason('a@example.com ')).toMatch(/white space/);
    expect(reason('a@exa mple.com')).toMatch(/white space/);
    expect(reason('a\t@example.com')).toMatch(/white space/);
    expect(reason('a\u00a0b@example.com')).toMatch(/white space/);
    expect(reason('"a\u3000b"@example.com')).toMatch(/white space/);
  });

  it('a missing or repeated unquoted @', () => {
    expect(reason('foo')).toMatch(/no @/);
    expect(reason('foo.example.com')).toMatch(/no @/);
    expect(reason('a@b@c')).toMatch(/more than one @/);
    expect(reason('"a@b"@c@d')).toMatch(/more than one @/);
    expect(reason('"a@b"')).toMatch(/no @/);
  });

  it('empty parts', () => {
    expect(reason('')).toMatch(/empty/);
    expect(reason('@example.com')).toMatch(/local part .* empty/);
    expect(reason('alice@')).toMatch(/domain .* empty/);
    expect(reason('@')).toMatch(/empty/);
  });

  it('leading, trailing and double dots', () => {
    expect(reason('.alice@example.com')).toMatch(/local part starts with a dot/);
    expect(reason('alice.@example.com')).toMatch(/local part ends with a dot/);
    expect(reason('al..ice@example.com')).toMatch(/local part contains two dots/);
    expect(reason('alice@.example.com')).toMatch(/domain starts with a dot/);
    expect(reason('alice@example.com.')).toMatch(/domain ends with a dot/);
    expect(reason('alice@example..com')).toMatch(/domain contains two dots/);
  });

  it('lengths in octets', () => {
    expect(reason(`${'a'.repeat(65)}@example.com`)).toMatch(/local part is longer than 64/);
    // 22 × 3 octets = 66 > 64, although only 22 characters
    expect(reason(`${'€'.repeat(22)}@example.com`)).toMatch(/local part is longer than 64/);
    expect(reason(`a@${'d'.repeat(63)}.${'d'.repeat(63)}.${'d'.repeat(63)}.${'d'.repeat(61)}`)).toMatch(
      /longer than 254/,
    );
    expect(reason(`${'a'.repeat(500)}@example.com`)).toMatch(/longer than 254/);
  });

  it('commas, even quoted', () => {
    expect(reason('a@example.com,b@example.com')).toMatch(/comma/);
    expect(reason('"a,b"@example.com')).toMatch(/comma/);
  });

  it('characters that are not atext, and malformed quoting', () => {
    expect(reason('a(comment)@example.com')).toMatch(/not allowed: "\("/);
    expect(reason('a;b@example.com')).toMatch(/not allowed/);
    expect(reason('a\\b@example.com')).toMatch(/not allowed/);
    expect(reason('a"b@example.com')).toMatch(/double quote/);
    expect(reason('"a"b@example.com')).toMatch(/between the quoted local part and the @/);
    expect(reason('"a".b@example.com')).toMatch(/between the quoted local part and the @/);
    expect(reason('"abc@example.com')).toMatch(/not closed/);
    expect(reason('"a\\"@example.com')).toMatch(/not closed/);
    expect(reason('alice@exa[mple.com')).toMatch(/not allowed/);
    expect(reason('alice@[1.2.3.4')).toMatch(/domain literal is malformed/);
    expect(reason('alice@[1.2[3].4]')).toMatch(/domain literal is malformed/);
    expect(reason('alice@exa_mple;com')).toMatch(/not allowed/);
  });

  it('lone surrogates', () => {
    expect(reason('a\ud800@example.com')).toMatch(/Unicode/);
  });
});
