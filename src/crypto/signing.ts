import { randomBytes } from 'node:crypto';
import nacl from 'tweetnacl';
import { Base64Error, decodeBase64, encodeBase64 } from './base64.js';
import { canonicalJsonBytes } from './canonical-json.js';

export interface SigningKeyLike {
  version: string;
  seed: Uint8Array;
}

export type Signatures = Record<string, Record<string, string>>;

export class SignatureError extends Error {
  override name = 'SignatureError';
}

const SEED_BYTES = 32;

// Deriving the keypair does a scalar multiplication; doing that on every
// signature would dominate signing cost. Keyed weakly so dropped keys go away.
// Seeds are assumed not to be mutated after first use.
const keyPairs = new WeakMap<Uint8Array, nacl.SignKeyPair>();

function keyPairFor(seed: Uint8Array): nacl.SignKeyPair {
  let kp = keyPairs.get(seed);
  if (!kp) {
    if (seed.length !== SEED_BYTES) {
      throw new RangeError(`ed25519 seed must be ${SEED_BYTES} bytes, got ${seed.length}`);
    }
    // tweetnacl's instanceof check fails for arrays from another realm (vm contexts); a copy is cheap.
    kp = nacl.sign.keyPair.fromSeed(new Uint8Array(seed));
    keyPairs.set(seed, kp);
  }
  return kp;
}

export function publicKeyFromSeed(seed: Uint8Array): Uint8Array {
  return keyPairFor(seed).publicKey.slice();
}

export function generateSeed(): Uint8Array {
  return new Uint8Array(randomBytes(SEED_BYTES));
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The bytes a signature covers: everything except `signatures` and `unsigned`. */
function signedBytes(obj: object): Uint8Array {
  const { signatures: _s, unsigned: _u, ...rest } = obj as Record<string, unknown>;
  return canonicalJsonBytes(rest);
}

/**
 * Signs per the spec's "Signing Details". Unlike signedjson's sign_json this
 * returns a copy, so callers can't be surprised by a mutated argument.
 */
export function signJson<T extends object>(
  obj: T,
  signerName: string,
  key: SigningKeyLike,
): T & { signatures: Signatures } {
  const record = obj as Record<string, unknown>;
  const { signatures: existing, unsigned, ...rest } = record;

  const signatures: Signatures = {};
  if (existing !== undefined) {
    if (!isRecord(existing)) throw new TypeError('signatures must be an object');
    for (const [name, sigs] of Object.entries(existing)) {
      if (!isRecord(sigs)) throw new TypeError(`signatures.${name} must be an object`);
      signatures[name] = { ...(sigs as Record<string, string>) };
    }
  }

  const sig = nacl.sign.detached(canonicalJsonBytes(rest), keyPairFor(key.seed).secretKey);
  const mine = Object.hasOwn(signatures, signerName) ? signatures[signerName]! : {};
  mine[`ed25519:${key.version}`] = encodeBase64(sig);
  // defineProperty, not assignment, so a signer called "__proto__" stays an own key.
  Object.defineProperty(signatures, signerName, {
    value: mine,
    enumerable: true,
    writable: true,
    configurable: true,
  });

  const out: Record<string, unknown> = { ...rest, signatures };
  if (Object.hasOwn(record, 'unsigned')) out.unsigned = unsigned;
  return out as T & { signatures: Signatures };
}

function signaturesFrom(obj: object, signerName: string): Record<string, unknown> | undefined {
  const all = (obj as Record<string, unknown>).signatures;
  if (!isRecord(all) || !Object.hasOwn(all, signerName)) return undefined;
  const mine = all[signerName];
  return isRecord(mine) ? mine : undefined;
}

/** Key IDs (e.g. "ed25519:0") that `signerName` has signatures under, whatever the algorithm. */
export function signatureKeyIds(obj: object, signerName: string): string[] {
  return Object.keys(signaturesFrom(obj, signerName) ?? {});
}

/**
 * Follows the spec's "Checking for a Signature"; the caller has already done
 * step 3 (finding the verification key for `keyId`). Throws SignatureError.
 */
export function verifySignedJson(
  obj: object,
  signerName: string,
  keyId: string,
  publicKey: Uint8Array,
): void {
  const mine = signaturesFrom(obj, signerName);
  if (!mine) throw new SignatureError(`no signature from ${signerName}`);
  if (!keyId.startsWith('ed25519:')) {
    throw new SignatureError(`unsupported signing algorithm in key ${keyId}`);
  }
  const encoded = Object.hasOwn(mine, keyId) ? mine[keyId] : undefined;
  if (typeof encoded !== 'string') {
    throw new SignatureError(`no signature with key ${keyId} from ${signerName}`);
  }
  if (publicKey.length !== nacl.sign.publicKeyLength) {
    throw new SignatureError(`verification key for ${keyId} is not ${nacl.sign.publicKeyLength} bytes`);
  }
  let sig: Uint8Array;
  try {
    sig = decodeBase64(encoded);
  } catch (e) {
    if (e instanceof Base64Error) throw new SignatureError(`bad base64 in signature (${keyId} from ${signerName})`);
    throw e;
  }
  if (
    sig.length !== nacl.sign.signatureLength ||
    !nacl.sign.detached.verify(signedBytes(obj), sig, new Uint8Array(publicKey))
  ) {
    throw new SignatureError(`signature does not verify (${keyId} from ${signerName})`);
  }
}
