export class Base64Error extends Error {
  override name = 'Base64Error';
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export function encodeBase64(bytes: Uint8Array): string {
  return toBuffer(bytes).toString('base64').replace(/=+$/, '');
}

export function encodeBase64Url(bytes: Uint8Array): string {
  // Node's base64url output is already unpadded.
  return toBuffer(bytes).toString('base64url');
}

const BODY = /^[A-Za-z0-9+/_-]*$/;

/**
 * Decodes standard or URL-safe base64, with or without padding.
 *
 * Buffer.from(s, 'base64') skips characters it does not know and stops at
 * stray '=', so everything is validated here first. Non-zero trailing bits
 * are accepted on purpose: the spec's own test-vector seed has them, and
 * Python's decoder (what Sydent and Synapse use) allows them.
 */
export function decodeBase64(s: string): Uint8Array {
  if (typeof s !== 'string') throw new Base64Error('base64 input must be a string');
  const firstPad = s.indexOf('=');
  const body = firstPad === -1 ? s : s.slice(0, firstPad);
  const padding = s.length - body.length;
  if (!BODY.test(body)) throw new Base64Error('invalid character in base64');
  if (padding > 0) {
    if (!/^=+$/.test(s.slice(firstPad))) throw new Base64Error('data after base64 padding');
    if (s.length % 4 !== 0 || padding > 2 || body.length % 4 === 0) {
      throw new Base64Error('incorrect base64 padding');
    }
  }
  if (body.length % 4 === 1) throw new Base64Error('impossible base64 length');
  if (/[+/]/.test(body) && /[-_]/.test(body)) {
    throw new Base64Error('base64 mixes standard and URL-safe alphabets');
  }
  // Decoded into memory of its own, so callers never hold a view onto Node's shared Buffer pool.
  const bytes = new Uint8Array((body.length * 3) >> 2);
  Buffer.from(bytes.buffer).write(body, 'base64');
  return bytes;
}
