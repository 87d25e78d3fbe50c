/**
 * `/account/register` step 4: who does this OpenID token belong to? Asks the homeserver the client named and
 * accepts only a user of that same homeserver (the spec's MUST: a token checked with example.com may not yield
 * @alice:matrix.org).
 */
import type { FederationClient } from './client.js';
import { errcodeOf } from './client.js';
import { serverNameOfUserId } from '../matrix/user-id.js';

export const USERINFO_MAX_BYTES = 5 * 1024;

export type OpenIdErrorKind = 'rejected' | 'bad_json' | 'no_sub' | 'malformed' | 'invalid_mxid' | 'wrong_server';

/** The homeserver answered, but not with a usable user id. Messages are Sydent's (register step 4). */
export class OpenIdError extends Error {
  constructor(
    readonly kind: OpenIdErrorKind,
    message: string,
    /** the HTTP status of the userinfo response */
    readonly status: number,
    readonly errcode?: string,
  ) {
    super(message);
    this.name = 'OpenIdError';
  }
}

// Sydent ignored the status; a homeserver saying "unknown token" is a rejection, not a malformed reply
const REJECTING_STATUSES = new Set([401, 403, 404]);

/**
 * The user id (`sub`) the homeserver vouches for. Throws FederationError when it cannot be reached (the
 * message names the server and the cause) and OpenIdError when its answer is not acceptable.
 */
export async function fetchOpenIdUserId(
  client: FederationClient,
  serverName: string,
  accessToken: string,
  signal?: AbortSignal,
): Promise<string> {
  // Sydent lower-cases the name before using it; doing it here too keeps the request and the check consistent
  const server = serverName.toLowerCase();
  const path = `/_matrix/federation/v1/openid/userinfo?access_token=${encodeURIComponent(accessToken)}`;
  const res = await client.request(server, {
    method: 'GET',
    path,
    maxBodyBytes: USERINFO_MAX_BYTES,
    ...(signal ? { signal } : {}),
  });
  const errcode = errcodeOf(res.json);
  if (REJECTING_STATUSES.has(res.status) && errcode !== undefined) {
    throw new OpenIdError('rejected', 'The Matrix homeserver rejected the OpenID token', res.status, errcode);
  }
  if (res.json === undefined)
    throw new OpenIdError('bad_json', 'The Matrix homeserver returned invalid JSON', res.status);
  if (typeof res.json !== 'object' || res.json === null || Array.isArray(res.json)) {
    // Sydent: an unhandled exception ("Internal Server Error"); the reply is simply malformed
    throw new OpenIdError('malformed', 'The Matrix homeserver returned a malformed reply', res.status);
  }
  const body = res.json as Record<string, unknown>;
  if (!('sub' in body)) {
    throw new OpenIdError('no_sub', "The Matrix homeserver did not include 'sub' in its response", res.status);
  }
  const sub = body.sub;
  if (typeof sub !== 'string')
    throw new OpenIdError('malformed', 'The Matrix homeserver returned a malformed reply', res.status);
  const subServer = serverNameOfUserId(sub);
  if (subServer === null)
    throw new OpenIdError('invalid_mxid', 'The Matrix homeserver returned an invalid MXID', res.status);
  // case-sensitive against the lower-cased name, as Sydent compares (server names are case-sensitive in Matrix)
  if (subServer !== server) {
    throw new OpenIdError(
      'wrong_server',
      'The Matrix homeserver returned a MXID belonging to another homeserver',
      res.status,
    );
  }
  return sub;
}
