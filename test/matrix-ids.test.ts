/**
 * Matrix identifiers (src/matrix): server names, user IDs and room IDs by the spec's grammar, and the canonical form
 * of a 3PID address.
 */
import { describe, expect, it } from 'vitest';
import {
  isAcceptableRoomId,
  isValidServerName,
  normaliseAddress,
  parseServerName,
  serverNameOfUserId,
} from '../src/matrix/index.js';

describe('server names', () => {
  it.each([
    ['matrix.org', { host: 'matrix.org', port: null, ipLiteral: false }],
    ['matrix.org:8888', { host: 'matrix.org', port: 8888, ipLiteral: false }],
    ['1.2.3.4', { host: '1.2.3.4', port: null, ipLiteral: true }],
    ['1.2.3.4:1234', { host: '1.2.3.4', port: 1234, ipLiteral: true }],
    ['[1234:5678::abcd]', { host: '1234:5678::abcd', port: null, ipLiteral: true }],
    ['[1234:5678::abcd]:5678', { host: '1234:5678::abcd', port: 5678, ipLiteral: true }],
    ['[::ffff:1.2.3.4]:1', { host: '::ffff:1.2.3.4', port: 1, ipLiteral: true }],
    ['localhost:65535', { host: 'localhost', port: 65535, ipLiteral: false }],
    ['a', { host: 'a', port: null, ipLiteral: false }],
    ['Example-1.COM.', { host: 'Example-1.COM.', port: null, ipLiteral: false }],
    ['a'.repeat(255), { host: 'a'.repeat(255), port: null, ipLiteral: false }],
  ])('%s is valid', (name, parsed) => {
    expect(parseServerName(name)).toEqual(parsed);
    expect(isValidServerName(name)).toBe(true);
  });

  it.each([
    [''],
    [':8448'],
    ['example.com:'],
    ['example.com:0'],
    ['example.com:65536'],
    ['example.com:08448'],
    ['example.com:123456'],
    ['example.com:-1'],
    ['example.com:+80'],
    ['example.com:80:80'],
    ['exa mple.com'],
    ['example_com'],
    ['example.com/path'],
    ['user@example.com'],
    ['ex\u00e4mple.com'],
    ['example.com\n'],
    ['a'.repeat(256)],
    ['1234:5678::abcd'],
    ['::1'],
    ['[::1'],
    ['[]'],
    ['[::1]x'],
    ['[::1]:'],
    ['[not:an:ip]'],
    ['[fe80::1%eth0]'],
    ['[1.2.3.4]'],
    ['256.1.1.1'],
    ['1.2.3.999:80'],
    ['01.2.3.4'],
  ])('%j is invalid', (name) => {
    expect(parseServerName(name)).toBeNull();
    expect(isValidServerName(name)).toBe(false);
  });

  it('takes the server part of a user id', () => {
    expect(serverNameOfUserId('@alice:example.com')).toBe('example.com');
    expect(serverNameOfUserId('@alice:example.com:8448')).toBe('example.com:8448');
    expect(serverNameOfUserId('@a:[::1]:8448')).toBe('[::1]:8448');
    expect(serverNameOfUserId('@alice')).toBeNull();
    expect(serverNameOfUserId('alice:example.com')).toBeNull();
    expect(serverNameOfUserId('@alice:')).toBeNull();
    expect(serverNameOfUserId('@alice:exa mple.com')).toBeNull();
  });
});

describe('room IDs', () => {
  it("any room version's, without control characters, at most 255 characters", () => {
    for (const ok of ['!abc:example.com', '!NoServerPart', '!' + 'a'.repeat(254)])
      expect(isAcceptableRoomId(ok), ok).toBe(true);
    for (const bad of ['', '!a\nb:example.com', '!a\u0085b', '!a\u007fb', '!' + 'a'.repeat(255)])
      expect(isAcceptableRoomId(bad), JSON.stringify(bad)).toBe(false);
  });
});

describe('3PID addresses', () => {
  it('emails are casefolded, phone numbers kept as they are', () => {
    expect(normaliseAddress('email', 'Stra\u00dfe@EXAMPLE.com')).toBe('strasse@example.com');
    expect(normaliseAddress('msisdn', '447700900750')).toBe('447700900750');
  });
});
