/**
 * The pure parts of SMS validation: the originator a number gets (Sydent's digit-sum choice), the SMS text,
 * Twilio's From, and error texts without the number.
 */
import { describe, expect, it } from 'vitest';
import type { Originator } from '../src/config/types.js';
import { chooseOriginator, DEFAULT_ORIGINATOR, renderSmsBody, TON } from '../src/sms/index.js';
import { excerpt, withoutNumber } from '../src/sms/provider.js';
import { twilioFrom } from '../src/sms/twilio.js';

describe('chooseOriginator', () => {
  const long: Originator = { type: 'long', text: '447700900001' };
  const short: Originator = { type: 'short', text: '12345' };
  const alpha: Originator = { type: 'alpha', text: 'Matrix' };

  it('picks by the digit sum modulo the count (447700900750: 43; of 3 → index 1, of 2 → index 1)', () => {
    expect(chooseOriginator({ '44': [long, short, alpha] }, '44', '447700900750')).toEqual(short);
    expect(chooseOriginator({ '44': [long, alpha] }, '44', '447700900750')).toEqual(alpha);
    // 447700900751: 44 → index 0 of 2, index 2 of 3
    expect(chooseOriginator({ '44': [long, alpha] }, '44', '447700900751')).toEqual(long);
    expect(chooseOriginator({ '44': [long, short, alpha] }, '44', '447700900751')).toEqual(alpha);
  });

  it('falls back to originators.default, then to alpha Matrix', () => {
    const other: Originator = { type: 'alpha', text: 'Other' };
    expect(chooseOriginator({ '44': [long], default: [other] }, '1', '12025550123')).toEqual(other);
    expect(chooseOriginator({ '44': [long] }, '1', '12025550123')).toEqual(DEFAULT_ORIGINATOR);
    expect(chooseOriginator({}, null, '12025550123')).toEqual({ type: 'alpha', text: 'Matrix' });
  });

  it('maps types to OpenMarket TONs', () => {
    expect(TON).toEqual({ long: 1, short: 3, alpha: 5 });
  });
});

describe('the SMS text', () => {
  it('replaces {token} as str.format does', () => {
    expect(renderSmsBody('Your code is {token}', '012345')).toBe('Your code is 012345');
    expect(renderSmsBody('{token} is your code ({token})', '999999')).toBe('999999 is your code (999999)');
    expect(renderSmsBody('{{token}} = {token}', '123456')).toBe('{token} = 123456');
    expect(renderSmsBody('no code {other}', '123456')).toBe('no code {other}');
  });
});

describe('provider helpers', () => {
  it("Twilio's From: a long number with +, the others as written", () => {
    expect(twilioFrom({ type: 'long', text: '447700900001' })).toBe('+447700900001');
    expect(twilioFrom({ type: 'long', text: '+447700900001' })).toBe('+447700900001');
    expect(twilioFrom({ type: 'short', text: '12345' })).toBe('12345');
    expect(twilioFrom({ type: 'alpha', text: 'Matrix' })).toBe('Matrix');
  });

  it('error texts lose the number and stay short', () => {
    expect(withoutNumber("The 'To' number +447700900750 is not valid (447700900750)", '447700900750')).toBe(
      "The 'To' number 44…50 is not valid (44…50)",
    );
    expect(excerpt({ code: 1, description: 'x' })).toBe('{"code":1,"description":"x"}');
    expect(excerpt('a'.repeat(300))).toHaveLength(201);
  });
});
