import { createHash } from 'node:crypto';

/** The `sha256` lookup hash of the identity service API (URL-safe, unpadded). */
export function lookupHash(address: string, medium: string, pepper: string): string {
  return createHash('sha256').update(`${address} ${medium} ${pepper}`, 'utf8').digest('base64url');
}
