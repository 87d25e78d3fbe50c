import { randomInt } from 'node:crypto';

export const DIGITS = '0123456789';
export const LETTERS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
export const ALPHANUMERIC = DIGITS + LETTERS;

/** Uniformly random string; randomInt rejects-and-retries so there is no modulo bias. */
export function randomString(length: number, alphabet: string): string {
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(`length must be a non-negative integer, got ${length}`);
  }
  const chars = [...alphabet];
  if (chars.length === 0) throw new RangeError('alphabet must not be empty');
  let out = '';
  for (let i = 0; i < length; i++) out += chars[randomInt(chars.length)];
  return out;
}

export function randomDigits(n: number): string {
  return randomString(n, DIGITS);
}
