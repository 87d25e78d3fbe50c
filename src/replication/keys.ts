/**
 * Peer public keys as `peer_pubkeys.key` holds them: unpadded base64 (standard or URL-safe), or the legacy hex
 * that Sydent still accepts ("Please update to base64 encoding").
 */
import { Base64Error, decodeBase64 } from '../crypto/index.js';

export class PeerKeyError extends Error {
  override name = 'PeerKeyError';
}

interface DecodedPeerKey {
  bytes: Uint8Array;
  /** the key was hex: it works, but base64 is the format to store */
  legacyHex: boolean;
}

const HEX_KEY = /^[0-9a-fA-F]{64}$/;

/** The 32 bytes of an ed25519 public key in either format; PeerKeyError when it is neither. */
export function decodePeerKey(text: string): DecodedPeerKey {
  const key = text.trim();
  if (HEX_KEY.test(key)) return { bytes: new Uint8Array(Buffer.from(key, 'hex')), legacyHex: true };
  let bytes: Uint8Array;
  try {
    bytes = decodeBase64(key);
  } catch (e) {
    if (e instanceof Base64Error) throw new PeerKeyError(`not base64 or hex: ${e.message}`);
    throw e;
  }
  if (bytes.length !== 32) throw new PeerKeyError(`an ed25519 public key is 32 bytes, this one is ${bytes.length}`);
  return { bytes, legacyHex: false };
}
