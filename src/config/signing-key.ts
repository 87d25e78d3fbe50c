/** The `[crypto] ed25519.signingkey` value, read and written with the crypto module's key format. */
import { formatSigningKey as format, generateSeed, parseSigningKey as parse } from '../crypto/index.js';
import type { SigningKey } from './types.js';

interface ParsedSigningKey {
  key: SigningKey;
  /** true when the value was the legacy hex form and should be rewritten in the current one */
  legacy: boolean;
}

/** Throws an Error whose message says what is wrong (never echoing the secret). */
export function parseSigningKey(text: string): ParsedSigningKey {
  const { alg, version, seed, legacyHex } = parse(text);
  return { key: { alg, version, seed }, legacy: legacyHex };
}

export function formatSigningKey(key: SigningKey): string {
  return format(key);
}

export function generateSigningKey(version = '0'): SigningKey {
  return { alg: 'ed25519', version, seed: generateSeed() };
}
