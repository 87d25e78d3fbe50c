import { randomFillSync, randomInt } from 'node:crypto';

export const DIGITS = '0123456789';
export const LETTERS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
export const ALPHANUMERIC = DIGITS + LETTERS;

/** Random bytes drawn a pool at a time: one system call per 4 KiB, not one per character. */
const pool = Buffer.alloc(4096);
let poolAt = pool.length;

function randomByte(): number {
  if (poolAt === pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  return pool[poolAt++]!;
}

/** The characters of the alphabets in use (a handful of constants), split once. */
const alphabets = new Map<string, string[]>();
const MAX_ALPHABETS = 16;

function charsOf(alphabet: string): string[] {
  let chars = alphabets.get(alphabet);
  if (!chars) {
    chars = [...alphabet];
    if (alphabets.size < MAX_ALPHABETS) alphabets.set(alphabet, chars);
  }
  return chars;
}

/**
 * Uniformly random string. A byte at or above the largest multiple of the alphabet's size below 256 is drawn
 * again, so there is no modulo bias; an alphabet of more than 256 characters draws with randomInt.
 */
export function randomString(length: number, alphabet: string): string {
  if (!Number.isSafeInteger(length) || length < 0) {
    throw new RangeError(`length must be a non-negative integer, got ${length}`);
  }
  const chars = charsOf(alphabet);
  const n = chars.length;
  if (n === 0) throw new RangeError('alphabet must not be empty');
  let out = '';
  if (n > 256) {
    for (let i = 0; i < length; i++) out += chars[randomInt(n)];
    return out;
  }
  const limit = 256 - (256 % n);
  for (let i = 0; i < length; i++) {
    let b = randomByte();
    while (b >= limit) b = randomByte();
    out += chars[b % n];
  }
  return out;
}

export function randomDigits(n: number): string {
  return randomString(n, DIGITS);
}
