/**
 * Whether a stored ed25519 signature is the one our key makes for a message, told without signing again.
 *
 * Ed25519 (RFC 8032) is deterministic. Signing M with a seed gives R = r·B and S = (r + h·s) mod L, where s (the
 * clamped scalar) and `prefix` are the two halves of SHA-512(seed), r = SHA-512(prefix ‖ M) mod L and
 * h = SHA-512(R ‖ A ‖ M) mod L. The scalar multiplication r·B is what a signature costs; S alone is two hashes and a
 * multiplication mod L. A signature whose S equals (r + h·s) mod L for its own R can only have been made with s and
 * `prefix`, i.e. by our key, for M; one made by another key, or for another message, matches by chance only
 * (about 2⁻²⁵²). Used to send a stored signature again instead of making it anew (replication pushes).
 */
import { hash } from 'node:crypto';

/** The order of the base point. */
const L = (1n << 252n) + 27742317777372353535851937790883648493n;

/**
 * The little-endian number in `binary`, a string of one character per byte (a multiple of 4 long), read 32 bits at a
 * time. Node returns a digest as such a string ('binary', i.e. latin1) in well under half the time it takes to return
 * it as a Buffer, which would then have to be read byte by byte all the same.
 */
function littleEndianOf(binary: string): bigint {
  let n = 0n;
  for (let i = binary.length - 4; i >= 0; i -= 4) {
    const word =
      binary.charCodeAt(i) |
      (binary.charCodeAt(i + 1) << 8) |
      (binary.charCodeAt(i + 2) << 16) |
      (binary.charCodeAt(i + 3) << 24);
    n = (n << 32n) | BigInt(word >>> 0);
  }
  return n;
}

const binaryOf = (bytes: Uint8Array): string =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('binary');

/** The little-endian number in the SHA-512 digest of `parts`. */
const sha512Number = (...parts: Uint8Array[]): bigint => littleEndianOf(hash('sha512', Buffer.concat(parts), 'binary'));

interface Expanded {
  scalar: bigint;
  prefix: Buffer;
}

// by seed, weakly, as signing.ts caches its key objects
const expanded = new WeakMap<Uint8Array, Expanded>();

function expand(seed: Uint8Array): Expanded {
  let e = expanded.get(seed);
  if (!e) {
    const digest = hash('sha512', seed, 'buffer');
    const a = Buffer.from(digest.subarray(0, 32));
    a[0]! &= 248;
    a[31]! &= 127;
    a[31]! |= 64;
    e = { scalar: littleEndianOf(binaryOf(a)), prefix: digest.subarray(32) };
    expanded.set(seed, e);
  }
  return e;
}

/**
 * True when `signature` (64 bytes) is exactly what ed25519 signing of `message` with `seed` gives; `publicKey` is
 * the seed's public key (32 bytes).
 */
export function isOwnSignature(
  message: Uint8Array,
  signature: Uint8Array,
  seed: Uint8Array,
  publicKey: Uint8Array,
): boolean {
  if (signature.length !== 64) return false;
  const s = littleEndianOf(binaryOf(signature.subarray(32)));
  if (s >= L) return false;
  const { scalar, prefix } = expand(seed);
  const r = sha512Number(prefix, message) % L;
  const h = sha512Number(signature.subarray(0, 32), publicKey, message) % L;
  return s === (r + h * scalar) % L;
}
