import { createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { Base64Error, decodeBase64, encodeBase64 } from './base64.js';
import { canonicalJson, canonicalJsonBytes } from './canonical-json.js';
import { isOwnSignature } from './own-signature.js';

export interface SigningKeyLike {
  version: string;
  seed: Uint8Array;
}

export type Signatures = Record<string, Record<string, string>>;

export class SignatureError extends Error {
  override name = 'SignatureError';
}

const SEED_BYTES = 32;

const PUBLIC_KEY_BYTES = 32;
const SIGNATURE_BYTES = 64;
// DER prefixes of a PKCS#8 ed25519 private key and an SPKI public key (RFC 8410), before the 32 key bytes.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

// Ed25519 through Node's OpenSSL rather than a pure JavaScript library (bench/README.md has the comparison): every
// bind signs and a replicating peer verifies hundreds of thousands of signatures. Key objects are cached per seed
// (weakly, so dropped keys go away); seeds are assumed not to change after first use.
const keyPairs = new WeakMap<Uint8Array, { privateKey: KeyObject; publicKey: Uint8Array }>();

function keyPairFor(seed: Uint8Array): { privateKey: KeyObject; publicKey: Uint8Array } {
  let kp = keyPairs.get(seed);
  if (!kp) {
    if (seed.length !== SEED_BYTES) {
      throw new RangeError(`ed25519 seed must be ${SEED_BYTES} bytes, got ${seed.length}`);
    }
    const privateKey = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
    const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
    kp = { privateKey, publicKey: new Uint8Array(spki.subarray(SPKI_PREFIX.length)) };
    keyPairs.set(seed, kp);
  }
  return kp;
}

/** Verify keys by their bytes, so a peer's or homeserver's key is parsed once. */
const publicKeyObjects = new Map<string, KeyObject>();

/**
 * The ed25519 verify key of 32 raw bytes, imported once (cached by its bytes): a caller checking many signatures
 * under one key holds on to it. Throws SignatureError for a key that is not 32 bytes.
 */
export function verifyKeyObject(publicKey: Uint8Array): KeyObject {
  if (publicKey.length !== PUBLIC_KEY_BYTES) {
    throw new SignatureError(`verification key is not ${PUBLIC_KEY_BYTES} bytes`);
  }
  const id = Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength).toString('base64');
  let key = publicKeyObjects.get(id);
  if (!key) {
    key = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
    if (publicKeyObjects.size > 10_000) publicKeyObjects.clear();
    publicKeyObjects.set(id, key);
  }
  return key;
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
  let existing: unknown;
  // What the signature covers: an object without either key is covered whole, and is not copied for it.
  let rest = record;
  if (Object.hasOwn(record, 'signatures') || Object.hasOwn(record, 'unsigned')) {
    const { signatures: given, unsigned: _unsigned, ...covered } = record;
    existing = given;
    rest = covered;
  }

  const signatures: Signatures = {};
  if (existing !== undefined) {
    if (!isRecord(existing)) throw new TypeError('signatures must be an object');
    for (const [name, sigs] of Object.entries(existing)) {
      if (!isRecord(sigs)) throw new TypeError(`signatures.${name} must be an object`);
      signatures[name] = { ...(sigs as Record<string, string>) };
    }
  }

  const mine = Object.hasOwn(signatures, signerName) ? signatures[signerName]! : {};
  mine[`ed25519:${key.version}`] = signatureAgain(canonicalJsonBytes(rest), key, undefined);
  // defineProperty, not assignment, so a signer called "__proto__" stays an own key.
  Object.defineProperty(signatures, signerName, {
    value: mine,
    enumerable: true,
    writable: true,
    configurable: true,
  });

  // An object-rest copy, which keeps a `__proto__` key of JSON as its own as a spread does, without the spread copy's
  // slow path for the key added next (bench/README.md).
  const { ...out } = rest;
  out.signatures = signatures;
  if (Object.hasOwn(record, 'unsigned')) out.unsigned = record.unsigned;
  return out as T & { signatures: Signatures };
}

/** `previous` decoded, when it is our key's signature of `message`. */
function reusable(previous: string | undefined, message: Uint8Array, key: SigningKeyLike): Uint8Array | null {
  if (previous === undefined) return null;
  let signature: Uint8Array;
  try {
    signature = decodeBase64(previous);
  } catch {
    return null;
  }
  return isOwnSignature(message, signature, key.seed, keyPairFor(key.seed).publicKey) ? signature : null;
}

/**
 * Our key's signature of `message` (the canonical JSON of what is signed), base64. `previous` is a signature made
 * before (as stored with the object): it is used when it is exactly the one signing would make now (same key, same
 * content; own-signature.ts tells it for a fraction of the cost of signing), and a new one is made otherwise.
 */
export function signatureAgain(message: Uint8Array, key: SigningKeyLike, previous: string | undefined): string {
  return encodeBase64(reusable(previous, message, key) ?? sign(null, message, keyPairFor(key.seed).privateKey));
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

/** What one signature covers and the signature itself, found and decoded but not yet checked. */
export interface SignedPayload {
  /** canonical JSON of the object without `signatures` and `unsigned` */
  payload: string;
  signature: Uint8Array;
}

/**
 * Steps 1, 2 and 4 of the spec's "Checking for a Signature" short of the ed25519 check itself: the signature of
 * `signerName` under `keyId`, decoded, and the canonical JSON it must cover. Throws SignatureError.
 */
export function signedPayload(obj: object, signerName: string, keyId: string): SignedPayload {
  const mine = signaturesFrom(obj, signerName);
  if (!mine) throw new SignatureError(`no signature from ${signerName}`);
  if (!keyId.startsWith('ed25519:')) {
    throw new SignatureError(`unsupported signing algorithm in key ${keyId}`);
  }
  const encoded = Object.hasOwn(mine, keyId) ? mine[keyId] : undefined;
  if (typeof encoded !== 'string') {
    throw new SignatureError(`no signature with key ${keyId} from ${signerName}`);
  }
  let signature: Uint8Array;
  try {
    signature = decodeBase64(encoded);
  } catch (e) {
    if (e instanceof Base64Error) throw new SignatureError(`bad base64 in signature (${keyId} from ${signerName})`);
    throw e;
  }
  if (signature.length !== SIGNATURE_BYTES) {
    throw new SignatureError(`signature does not verify (${keyId} from ${signerName})`);
  }
  const { signatures: _s, unsigned: _u, ...rest } = obj as Record<string, unknown>;
  return { payload: canonicalJson(rest), signature };
}

/** The ed25519 check of a payload from `signedPayload` (its canonical JSON as UTF-8 bytes). */
export function verifyPayload(key: KeyObject, payload: Uint8Array, signature: Uint8Array): boolean {
  return verify(null, payload, key, signature);
}

/**
 * Follows the spec's "Checking for a Signature"; the caller has already done
 * step 3 (finding the verification key for `keyId`). Throws SignatureError.
 */
export function verifySignedJson(
  obj: object,
  signerName: string,
  keyId: string,
  publicKey: Uint8Array | KeyObject,
): void {
  const { payload, signature } = signedPayload(obj, signerName, keyId);
  let key: KeyObject;
  try {
    key = publicKey instanceof Uint8Array ? verifyKeyObject(publicKey) : publicKey;
  } catch (e) {
    if (e instanceof SignatureError) throw new SignatureError(`verification key for ${keyId} is not 32 bytes`);
    throw e;
  }
  if (!verifyPayload(key, Buffer.from(payload, 'utf8'), signature)) {
    throw new SignatureError(`signature does not verify (${keyId} from ${signerName})`);
  }
}
