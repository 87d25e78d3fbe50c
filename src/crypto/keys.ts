import { Base64Error, decodeBase64, encodeBase64 } from './base64.js';
import type { SigningKeyLike } from './signing.js';

export class KeyFormatError extends Error {
  override name = 'KeyFormatError';
}

export interface ParsedSigningKey extends SigningKeyLike {
  alg: 'ed25519';
  /** True for the pre-signedjson single hex token; Sydent rewrites these in the new format. */
  legacyHex: boolean;
}

const SEED_BYTES = 32;

/**
 * Parses Sydent's `crypto.ed25519.signingkey`: `"ed25519 <version> <base64 seed>"`,
 * or a legacy bare 64-hex-character seed (which Sydent treats as version "0").
 */
export function parseSigningKey(value: string): ParsedSigningKey {
  const trimmed = value.trim();
  if (trimmed === '') throw new KeyFormatError('signing key is empty');
  const parts = trimmed.split(/\s+/);

  if (parts.length === 1) {
    if (!/^[0-9a-fA-F]{64}$/.test(trimmed)) {
      throw new KeyFormatError(
        'signing key must be "ed25519 <version> <base64 seed>" or a legacy 64-character hex seed',
      );
    }
    return { alg: 'ed25519', version: '0', seed: new Uint8Array(Buffer.from(trimmed, 'hex')), legacyHex: true };
  }

  if (parts.length !== 3) {
    throw new KeyFormatError(`signing key has ${parts.length} parts, expected 3: "ed25519 <version> <base64 seed>"`);
  }
  const [alg, version, seedText] = parts as [string, string, string];
  if (alg !== 'ed25519') throw new KeyFormatError(`unknown signing key algorithm "${alg}", expected ed25519`);
  // The version becomes part of the key id `ed25519:<version>`, so it may not hold separators.
  if (!/^[A-Za-z0-9_]+$/.test(version)) {
    throw new KeyFormatError('signing key version may only hold letters, digits and _');
  }

  let seed: Uint8Array;
  try {
    seed = decodeBase64(seedText);
  } catch (e) {
    if (e instanceof Base64Error) throw new KeyFormatError(`signing key seed is not valid base64: ${e.message}`);
    throw e;
  }
  if (seed.length !== SEED_BYTES) {
    throw new KeyFormatError(`signing key seed must be ${SEED_BYTES} bytes, got ${seed.length}`);
  }
  return { alg: 'ed25519', version, seed, legacyHex: false };
}

export function formatSigningKey(key: SigningKeyLike): string {
  return `ed25519 ${key.version} ${encodeBase64(key.seed)}`;
}
