/**
 * Matrix user IDs (spec appendix "User Identifiers"): `@localpart:server_name`. The server part is held to the
 * server-name grammar, since it names the homeserver we may contact.
 */
import { isValidServerName } from './server-name.js';

/** The server part of `@local:server`, or null when it is not a user id with a valid server name. */
export function serverNameOfUserId(mxid: string): string | null {
  if (typeof mxid !== 'string' || !mxid.startsWith('@')) return null;
  const colon = mxid.indexOf(':');
  if (colon < 0) return null;
  const server = mxid.slice(colon + 1);
  return isValidServerName(server) ? server : null;
}

/** The spec's longest user ID (the grammar's limit, in bytes, sigil and server name included). */
export const MAX_USER_ID_LENGTH = 255;
/** A localpart's characters in the spec's historical grammar (printable ASCII but `:`), which every user ID fits. */
const LOCALPART = /^[\x21-\x39\x3b-\x7e]+$/;

/** Whether `mxid` is a user ID by the spec's grammar: `@localpart:server_name`, at most 255 bytes. */
export function isValidUserId(mxid: string): boolean {
  if (typeof mxid !== 'string' || mxid.length > MAX_USER_ID_LENGTH || !mxid.startsWith('@')) return false;
  const colon = mxid.indexOf(':');
  return colon > 1 && LOCALPART.test(mxid.slice(1, colon)) && isValidServerName(mxid.slice(colon + 1));
}
