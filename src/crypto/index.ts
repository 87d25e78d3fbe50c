export { Base64Error, decodeBase64, encodeBase64, encodeBase64Url } from './base64.js';
export { CanonicalJsonError, canonicalJson, canonicalJsonBytes, compareCodePoints } from './canonical-json.js';
export { lookupHash } from './hash.js';
export { KeyFormatError, formatSigningKey, parseSigningKey } from './keys.js';
export type { ParsedSigningKey } from './keys.js';
export { ALPHANUMERIC, DIGITS, LETTERS, randomDigits, randomString } from './random.js';
export {
  SignatureError,
  generateSeed,
  publicKeyFromSeed,
  signJson,
  signatureAgain,
  signatureKeyIds,
  signedPayload,
  verifyKeyObject,
  verifyPayload,
  verifySignedJson,
} from './signing.js';
export type { SignedPayload, SigningKeyLike, Signatures } from './signing.js';
