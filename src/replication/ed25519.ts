/**
 * Signing and verifying replicated associations with Node's own ed25519 (OpenSSL), which is one to two orders
 * of magnitude faster than tweetnacl: a peer catching up checks every signature of 100,000s of associations.
 * Same rules and same bytes as src/crypto's signJson / verifySignedJson (ed25519 is deterministic, so the
 * signatures are identical), checked by the tests.
 */
import { createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';

import { Base64Error, canonicalJsonBytes, decodeBase64, encodeBase64 } from '../crypto/index.js';
import type { SigningKeyLike } from '../crypto/index.js';

// DER prefixes of a PKCS#8 ed25519 private key (RFC 8410) and an SPKI ed25519 public key, before the 32 bytes.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export class SignatureCheckError extends Error {
  override name = 'SignatureCheckError';
}

const privateKeys = new WeakMap<Uint8Array, KeyObject>();

function privateKeyOf(seed: Uint8Array): KeyObject {
  let key = privateKeys.get(seed);
  if (!key) {
    if (seed.length !== 32) throw new RangeError(`ed25519 seed must be 32 bytes, got ${seed.length}`);
    key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
    privateKeys.set(seed, key);
  }
  return key;
}

/** The verify key object of 32 raw public key bytes. */
export function publicKeyObject(publicKey: Uint8Array): KeyObject {
  if (publicKey.length !== 32) throw new SignatureCheckError(`an ed25519 public key is 32 bytes, got ${publicKey.length}`);
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
}

export type Signed<T> = T & { signatures: Record<string, Record<string, string>> };

/**
 * Signs a fresh object (no `signatures` or `unsigned` of its own) as `signerName` with key id
 * `ed25519:<version>`.
 */
export function signFresh<T extends object>(obj: T, signerName: string, key: SigningKeyLike): Signed<T> {
  const sig = sign(null, canonicalJsonBytes(obj), privateKeyOf(key.seed));
  const signatures: Record<string, Record<string, string>> = {};
  Object.defineProperty(signatures, signerName, {
    value: { [`ed25519:${key.version}`]: encodeBase64(sig) },
    enumerable: true,
    writable: true,
    configurable: true,
  });
  return { ...obj, signatures };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Checks `signatures[signerName][keyId]` over the object without `signatures` and `unsigned`. Throws
 * SignatureCheckError saying what is wrong.
 */
export function verifySigned(obj: Record<string, unknown>, signerName: string, keyId: string, key: KeyObject): void {
  const all = obj['signatures'];
  if (!isRecord(all)) throw new SignatureCheckError('no signatures');
  const mine = Object.hasOwn(all, signerName) ? all[signerName] : undefined;
  if (!isRecord(mine)) throw new SignatureCheckError(`no signature from ${signerName}`);
  const encoded = Object.hasOwn(mine, keyId) ? mine[keyId] : undefined;
  if (typeof encoded !== 'string') throw new SignatureCheckError(`no signature with key ${keyId} from ${signerName}`);
  let sig: Uint8Array;
  try {
    sig = decodeBase64(encoded);
  } catch (e) {
    if (e instanceof Base64Error) throw new SignatureCheckError(`bad base64 in the signature of ${signerName}`);
    throw e;
  }
  if (sig.length !== 64) throw new SignatureCheckError(`the signature of ${signerName} is not 64 bytes`);
  const { signatures: _s, unsigned: _u, ...rest } = obj;
  let bytes: Uint8Array;
  try {
    bytes = canonicalJsonBytes(rest);
  } catch (e) {
    throw new SignatureCheckError(`not signable JSON: ${(e as Error).message}`);
  }
  if (!verify(null, bytes, key, sig)) throw new SignatureCheckError(`the signature of ${signerName} does not verify`);
}
