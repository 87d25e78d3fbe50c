/**
 * Phone numbers (src/matrix/phone.ts): a number read as dialled from a country, in the MSISDN form, with Google's
 * international format.
 */
import { describe, expect, it } from 'vitest';
import { countryCodeOf, isCountryField, parsePhone } from '../src/matrix/index.js';

describe('parsePhone', () => {
  it.each([
    ['07700 900750', 'GB', '447700900750', '44', '+44 7700 900750'],
    ['07700900750', 'gb', '447700900750', '44', '+44 7700 900750'],
    ['+44 7700 900750', 'US', '447700900750', '44', '+44 7700 900750'],
    ['0044 7700 900750', 'GB', '447700900750', '44', '+44 7700 900750'],
    ['(202) 555-0123', 'US', '12025550123', '1', '+1 202-555-0123'],
    ['+1 202-555-0123', 'GB', '12025550123', '1', '+1 202-555-0123'],
    ['06 12 34 56 78', 'FR', '33612345678', '33', '+33 6 12 34 56 78'],
    ['030 123456', 'DE', '4930123456', '49', '+49 30 123456'],
    ['+447700900750', 'ZZ', '447700900750', '44', '+44 7700 900750'],
  ])('%s dialled from %s is %s', (number, country, msisdn, cc, intl) => {
    expect(parsePhone(number, country)).toEqual({ msisdn, countryCode: cc, intlFmt: intl });
  });

  it.each([
    ['letters', 'abcdef', 'GB'],
    ['a vanity number', '1-800-FLOWERS', 'US'],
    ['text around a number', 'call 07700 900750 now', 'GB'],
    ['empty', '', 'GB'],
    ['too short', '12', 'GB'],
    ['too short after +', '+44 1234', 'GB'],
    ['too long for the country', '077009007501234', 'GB'],
    ['no country code (unknown country, no +)', '07700900750', 'ZZ'],
    ['an unknown calling code', '+999 123456', 'GB'],
    ['over 50 characters', `+44 7700 900750${' '.repeat(40)}`, 'GB'],
  ])('%s is not a number', (_what, number, country) => {
    expect(parsePhone(number, country)).toBeNull();
  });

  it('country codes of MSISDNs', () => {
    expect(countryCodeOf('447700900750')).toBe('44');
    expect(countryCodeOf('12025550123')).toBe('1');
    expect(countryCodeOf('33612345678')).toBe('33');
    expect(countryCodeOf('99912')).toBeNull();
  });

  it('country fields are two letters', () => {
    expect(isCountryField('GB')).toBe(true);
    expect(isCountryField('gb')).toBe(true);
    for (const bad of ['', 'G', 'GBR', '44', 'G1', ' GB']) expect(isCountryField(bad), bad).toBe(false);
  });
});
