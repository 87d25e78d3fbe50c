/**
 * What an SMS says and who it says it is from: Sydent's `bodyTemplate` and `getOriginator` (sydent-behaviour §7.3).
 */
import type { Originator, OriginatorType } from '../config/types.js';

/** Sydent's fallback when no `originators.<cc>` nor `originators.default` is configured. */
export const DEFAULT_ORIGINATOR: Originator = { type: 'alpha', text: 'Matrix' };

/** OpenMarket's type of number for each originator type. */
export const TON: Readonly<Record<OriginatorType, number>> = { long: 1, short: 3, alpha: 5 };

/**
 * `originators.<cc>`, else `originators.default`, else alpha `Matrix`; among several, the one at the digit sum of
 * the number modulo their count, so a number always hears from the same sender.
 */
export function chooseOriginator(
  originators: Readonly<Record<string, readonly Originator[]>>,
  countryCode: string | null,
  msisdn: string,
): Originator {
  const forCountry = countryCode === null ? undefined : originators[countryCode];
  const list = forCountry?.length
    ? forCountry
    : originators['default']?.length
      ? originators['default']
      : [DEFAULT_ORIGINATOR];
  let sum = 0;
  for (const ch of msisdn) if (ch >= '0' && ch <= '9') sum += Number(ch);
  return list[sum % list.length] ?? DEFAULT_ORIGINATOR;
}

/**
 * `bodyTemplate.format(token=…)` as Python does it for this one field: `{token}` is the code, `{{` and `}}` are
 * literal braces. Anything else stays as written (Python would have failed the send).
 */
export function renderSmsBody(template: string, token: string): string {
  return template.replace(/\{\{|\}\}|\{token\}/g, (m) => (m === '{{' ? '{' : m === '}}' ? '}' : token));
}
