/**
 * Phone numbers as the msisdn endpoints take them (libphonenumber-js, as Sydent used Google's phonenumbers): the
 * number is read as if dialled from `country`, a leading `+` (or international prefix) overriding it, and kept
 * as its E.164 digits without the `+`, the MSISDN form the spec asks for (appendix "3PID Types").
 */
import { createRequire } from 'node:module';
import type * as LibPhoneNumber from 'libphonenumber-js';
import type { PhoneNumber } from 'libphonenumber-js';
import { RecentValues } from '../util/recent-values.js';

// The numbering-plan metadata is large: loaded with the first phone number, not at every start-up.
const require = createRequire(import.meta.url);
let lib: typeof LibPhoneNumber | undefined;
const phoneLib = (): typeof LibPhoneNumber => (lib ??= require('libphonenumber-js') as typeof LibPhoneNumber);

/** Longer than any number with formatting; refused before parsing. */
export const MAX_PHONE_NUMBER_LENGTH = 50;

/** Shared by every caller that parses the same number: read only. */
export interface ParsedPhone {
  /** E.164 digits without `+`, e.g. `447700900750` */
  readonly msisdn: string;
  /** the country calling code, e.g. `44` (the key of `originators.<cc>` and `smsrule.<cc>`) */
  readonly countryCode: string;
  /** Google's INTERNATIONAL format, e.g. `+44 7700 900750`, `+1 202-555-0123` */
  readonly intlFmt: string;
}

/** `country`: ISO 3166-1 alpha-2, in any case. */
export function isCountryField(value: string): boolean {
  return /^[A-Za-z]{2}$/.test(value);
}

/**
 * The numbers parsed last, by region and number as given: libphonenumber-js takes tens of microseconds a number
 * (most of a repeated requestToken's time), and a client repeats its request with the same number.
 */
const recentlyParsed = new RecentValues<ParsedPhone | null>(1024);

/**
 * The number dialled from `country`, or null when it is not one: no digits, no known country calling code, or
 * a length no number of that country can have (`isPossible`). Validity (an assigned range) is not required, as
 * in Sydent: numbering plans change faster than our metadata.
 */
export function parsePhone(phoneNumber: string, country: string): ParsedPhone | null {
  if (phoneNumber.length > MAX_PHONE_NUMBER_LENGTH) return null;
  const region = country.toUpperCase();
  return recentlyParsed.through(`${region}\u0000${phoneNumber}`, () => parseInRegion(phoneNumber, region));
}

function parseInRegion(phoneNumber: string, region: string): ParsedPhone | null {
  let phone: PhoneNumber;
  try {
    phone = phoneLib().parsePhoneNumberWithError(phoneNumber, {
      defaultCountry: phoneLib().isSupportedCountry(region) ? region : undefined,
      // the whole field must be the number, not a number found inside some text
      extract: false,
    });
  } catch {
    return null;
  }
  if (!phone.countryCallingCode || !phone.isPossible()) return null;
  const msisdn = phone.number.slice(1);
  if (!/^\d{2,15}$/.test(msisdn)) return null;
  return { msisdn, countryCode: phone.countryCallingCode, intlFmt: internationalFormat(phone) };
}

/** The calling code of an MSISDN we produced (digits without `+`), or null. */
export function countryCodeOf(msisdn: string): string | null {
  try {
    return phoneLib().parsePhoneNumberWithError(`+${msisdn}`, { extract: false }).countryCallingCode || null;
  } catch {
    return null;
  }
}

// The parts of libphonenumber-js's metadata classes used below, which its typings leave out.
interface NumberFormatRule {
  pattern(): string;
  leadingDigitsPatterns(): string[];
  internationalFormat(): string;
}
interface MetadataWithFormats {
  selectNumberingPlan(callingCode: string): void;
  numberingPlan?: { formats(): NumberFormatRule[] };
}

/**
 * INTERNATIONAL as Google's library writes it (and so Sydent answered): the numbering plan's international
 * pattern as is. libphonenumber-js's formatInternational() turns every separator into a space
 * (`+1 202 555 0123` instead of `+1 202-555-0123`), so the pattern is applied here; its own output is the
 * fallback.
 */
function internationalFormat(phone: PhoneNumber): string {
  const fallback = phone.formatInternational();
  if (phone.ext) return fallback;
  try {
    const metadata = new (phoneLib().Metadata)() as unknown as MetadataWithFormats;
    metadata.selectNumberingPlan(phone.countryCallingCode);
    const national = phone.nationalNumber;
    const rule = metadata.numberingPlan?.formats().find((f) => {
      const leading = f.leadingDigitsPatterns();
      const last = leading[leading.length - 1];
      if (last !== undefined && national.search(new RegExp(last)) !== 0) return false;
      return new RegExp(`^(?:${f.pattern()})$`).test(national);
    });
    if (!rule || rule.internationalFormat() === 'NA') return fallback;
    return `+${phone.countryCallingCode} ${national.replace(new RegExp(`^(?:${rule.pattern()})$`), rule.internationalFormat())}`;
  } catch {
    return fallback;
  }
}
