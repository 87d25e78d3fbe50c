import { hash } from 'node:crypto';

/** The `sha256` lookup hash of the identity service API (URL-safe, unpadded). */
export function lookupHash(address: string, medium: string, pepper: string): string {
  return hash('sha256', `${address} ${medium} ${pepper}`, 'base64url');
}
