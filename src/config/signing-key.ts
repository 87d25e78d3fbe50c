/**
 * The `[crypto] ed25519.signingkey` value: `ed25519 <version> <unpadded base64 seed>` as signedjson writes it,
 * or the legacy single hex token of very old Sydents (version "0"). Kept apart from src/crypto so the
 * configuration does not depend on it.
 */
import { randomBytes } from 'node:crypto';
import type { SigningKey } from './types.js';

const SEED_BYTES = 32;

export interface ParsedSigningKey {
  key: SigningKey;
  /** true when the value was the legacy hex form and should be rewritten in the current one */
  legacy: boolean;
}

/** Throws an Error whose message says what is wrong (never echoing the secret). */
export function parseSigningKey(text: string): ParsedSigningKey {
  const parts = text.trim().split(/\s+/);
  if (parts.length === 1) {
    const hex = parts[0] ?? '';
    if (!/^[0-9a-fA-F]{64}$/.test(hex)) {
      throw new Error('a single token must be a legacy 64-character hex seed; expected "ed25519 <version> <base64 seed>"');
    }
    return { key: { alg: 'ed25519', version: '0', seed: new Uint8Array(Buffer.from(hex, 'hex')) }, legacy: true };
  }
  const [alg, version, encoded] = parts;
  if (parts.length !== 3 || alg === undefined || version === undefined || encoded === undefined) {
    throw new Error('expected "ed25519 <version> <base64 seed>"');
  }
  if (alg !== 'ed25519') throw new Error(`unsupported key algorithm "${alg}" (only ed25519)`);
  if (!/^[A-Za-z0-9_]+$/.test(version)) throw new Error('the key version may only hold letters, digits and _');
  // signedjson accepts standard and URL-safe alphabets, with or without padding
  if (!/^[A-Za-z0-9+/_-]{43}=?$/.test(encoded)) throw new Error('the seed is not base64 of 32 bytes');
  const seed = Buffer.from(encoded.replace(/-/g, '+').replace(/_/g, '/'), 'base64');
  if (seed.length !== SEED_BYTES) throw new Error('the seed is not base64 of 32 bytes');
  return { key: { alg: 'ed25519', version, seed: new Uint8Array(seed) }, legacy: false };
}

export function formatSigningKey(key: SigningKey): string {
  return `${key.alg} ${key.version} ${Buffer.from(key.seed).toString('base64').replace(/=+$/, '')}`;
}

export function generateSigningKey(version = '0'): SigningKey {
  return { alg: 'ed25519', version, seed: new Uint8Array(randomBytes(SEED_BYTES)) };
}
