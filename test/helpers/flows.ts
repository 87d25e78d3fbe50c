/**
 * Whole user flows in one call, so binding and lookup tests read short:
 *
 *   const sid = await validateEmail(t, smtp, { email: 'Alice@Example.com', clientSecret: 's1', api: 'v1' });
 *   const token = await registerAccount(t, env, 'alice');   // v2 access token of @alice:<env.serverName>
 *
 * plus the small pieces those tests share: our public key as a client fetches it, signature checks, lookup
 * hashes computed independently of src/, rows of the server's database, invite rows, internal binds.
 */
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { expect } from 'vitest';
import { decodeBase64, verifySignedJson } from '../../src/crypto/index.js';
import { SNAPSHOT_MS } from '../../src/store/lookup-connection.js';
import { call, mailLink, type Reply } from './email.js';
import type { FederationEnv } from './federation-env.js';
import type { RouteHandler } from './homeserver.js';
import { inlineParams, pgUrlOf, psql, rows } from './rows.js';
import type { TestServer } from './server.js';
import type { ReceivedMail, SmtpTestServer } from './smtp.js';

export const SERVER_NAME = 'is.example.test';
export const V1 = '/_matrix/identity/api/v1';
export const V2 = '/_matrix/identity/v2';
export const INTERNAL = '/_matrix/identity/internal';
/** Sydent's THREEPID_ASSOCIATION_LIFETIME_MS */
export const HUNDRED_YEARS_MS = 100 * 365 * 24 * 60 * 60 * 1000;
export const DAY_MS = 24 * 60 * 60 * 1000;

export type Api = 'v1' | 'v2';

export const apiUrl = (t: TestServer, api: Api, p: string): string => t.url(`${api === 'v1' ? V1 : V2}${p}`);

export interface ValidateEmailOptions {
  email: string;
  clientSecret: string;
  api: Api;
  /** v2 access token */
  token?: string;
  /** default 1 */
  sendAttempt?: number;
}

/** requestToken, then the token out of the mail it sent (found by the sid in its link). Nothing is validated. */
export async function requestEmailToken(
  t: TestServer,
  smtp: SmtpTestServer,
  o: ValidateEmailOptions,
): Promise<{ sid: string; mailToken: string; mail: ReceivedMail }> {
  const res = await call(apiUrl(t, o.api, '/validate/email/requestToken'), {
    body: { client_secret: o.clientSecret, email: o.email, send_attempt: o.sendAttempt ?? 1 },
    token: o.token,
  });
  expect(res.status, `requestToken: ${res.text}`).toBe(200);
  const sid = String(res.json['sid']);
  const mail = await smtp.waitForMessage((m) => linkOf(m)?.searchParams.get('sid') === sid);
  const mailToken = linkOf(mail)?.searchParams.get('token');
  if (!mailToken) throw new Error(`no token in the mail for sid ${sid}`);
  return { sid, mailToken, mail };
}

/** requestToken, read the mail's token, POST submitToken: the sid of a validated session. */
export async function validateEmail(t: TestServer, smtp: SmtpTestServer, o: ValidateEmailOptions): Promise<string> {
  const { sid, mailToken } = await requestEmailToken(t, smtp, o);
  const res = await call(apiUrl(t, o.api, '/validate/email/submitToken'), {
    body: { sid, client_secret: o.clientSecret, token: mailToken },
    token: o.token,
  });
  expect(res.status, `submitToken: ${res.text}`).toBe(200);
  expect(res.json).toEqual({ success: true });
  return sid;
}

function linkOf(m: ReceivedMail): URL | null {
  try {
    return mailLink(m);
  } catch {
    return null;
  }
}

const USERINFO = 'GET /_matrix/federation/v1/openid/userinfo';
const OPENID_PREFIX = 'flows-openid-';
const withUserinfo = new WeakSet<FederationEnv>();

/** `@<localpart>:<the loopback homeserver's name>` */
export const userIdOf = (env: FederationEnv, localpart: string): string => `@${localpart}:${env.serverName}`;

/**
 * Makes the env's homeserver vouch for OpenID tokens `flows-openid-<localpart>` (as `@<localpart>:<server>`);
 * other tokens still go to the handler the env was started with.
 */
export function installUserinfo(env: FederationEnv): void {
  if (withUserinfo.has(env)) return;
  withUserinfo.add(env);
  const previous: RouteHandler | undefined = env.hs.routes[USERINFO];
  env.hs.routes[USERINFO] = (req, body) => {
    const token = new URL(req.url, 'https://x').searchParams.get('access_token') ?? '';
    if (token.startsWith(OPENID_PREFIX)) return { json: { sub: userIdOf(env, token.slice(OPENID_PREFIX.length)) } };
    if (previous) return previous(req, body);
    return { status: 401, json: { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token' } };
  };
}

/** `POST /v2/account/register` with an OpenID token the env's homeserver vouches for: the IS access token. */
export async function registerAccount(t: TestServer, env: FederationEnv, localpart: string): Promise<string> {
  installUserinfo(env);
  const res = await call(t.url(`${V2}/account/register`), {
    body: {
      access_token: `${OPENID_PREFIX}${localpart}`,
      token_type: 'Bearer',
      matrix_server_name: env.serverName,
      expires_in: 3600,
    },
  });
  expect(res.status, `register: ${res.text}`).toBe(200);
  const token = res.json['token'];
  if (typeof token !== 'string') throw new Error(`register answered no token: ${res.text}`);
  return token;
}

/** Our long-term public key, as a homeserver fetches it (`GET /v2/pubkey/ed25519:0`). */
export async function serverPublicKey(t: TestServer): Promise<Uint8Array> {
  const res = await call(t.url(`${V2}/pubkey/ed25519:0`));
  expect(res.status, res.text).toBe(200);
  return decodeBase64(res.json['public_key'] as string);
}

/** Whether `obj` carries a valid signature of ours under `ed25519:0` (throws a SignatureError if not). */
export function verifyOurs(obj: object, publicKey: Uint8Array): void {
  verifySignedJson(obj, SERVER_NAME, 'ed25519:0', publicKey);
}

/** The sha256 lookup hash, computed here from the spec (not with src/): URL-safe unpadded base64. */
export function sha256Of(address: string, medium: string, pepper: string): string {
  return createHash('sha256').update(`${address} ${medium} ${pepper}`, 'utf8').digest('base64url');
}

/** `GET /v2/hash_details`: the pepper (asserting the shape of the answer). */
export async function lookupPepper(t: TestServer, token: string): Promise<string> {
  const res = await call(t.url(`${V2}/hash_details`), { token });
  expect(res.status, res.text).toBe(200);
  const pepper = res.json['lookup_pepper'];
  if (typeof pepper !== 'string' || pepper === '') throw new Error(`no lookup_pepper: ${res.text}`);
  return pepper;
}

/** `POST /v2/lookup` */
export function lookupV2(
  t: TestServer,
  token: string | undefined,
  body: { addresses?: unknown; algorithm?: unknown; pepper?: unknown } | Record<string, unknown>,
): Promise<Reply> {
  return call(t.url(`${V2}/lookup`), { body, token });
}

/** `GET /api/v1/lookup` */
export function lookupV1(t: TestServer, medium: string, address: string): Promise<Reply> {
  return call(t.url(`${V1}/lookup?medium=${encodeURIComponent(medium)}&address=${encodeURIComponent(address)}`));
}

/** `POST /api/v1/bulk_lookup` */
export function bulkLookup(t: TestServer, threepids: unknown): Promise<Reply> {
  return call(t.url(`${V1}/bulk_lookup`), { body: { threepids } });
}

/** `POST <internal>/bind` or `/unbind` */
export function internal(t: TestServer, what: 'bind' | 'unbind', body: unknown): Promise<Reply> {
  return call(t.internalUrl(`${INTERNAL}/${what}`), { body });
}

/**
 * Writes into the server's SQLite file from a connection of its own, as another process would (WAL, so alongside
 * the running server). Resolves once the server's lookups see the write: their read snapshot lasts SNAPSHOT_MS, and
 * a timer set later fires after the snapshot's own.
 */
export async function write(t: TestServer, sql: string, ...params: unknown[]): Promise<void> {
  const url = pgUrlOf(t);
  if (url) {
    psql(url, inlineParams(sql, params));
    return;
  }
  const db = new Database(t.config.db.dbFile, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    db.prepare(sql).run(...params);
  } finally {
    db.close();
  }
  await new Promise((resolve) => setTimeout(resolve, SNAPSHOT_MS + 1));
}

export interface AssociationRows {
  local: Record<string, unknown>[];
  global: Record<string, unknown>[];
}

/** Every local and global association row of one 3PID (address as stored), oldest first. */
export function associationRows(t: TestServer, medium: string, address: string): AssociationRows {
  return {
    local: rows(
      t,
      'SELECT * FROM local_threepid_associations WHERE medium = ? AND address = ? ORDER BY id',
      medium,
      address,
    ),
    global: rows(
      t,
      'SELECT * FROM global_threepid_associations WHERE medium = ? AND address = ? ORDER BY id',
      medium,
      address,
    ),
  };
}

/**
 * A refusal as a client sees it (the status, the errcode and an error text) that stored nothing in either
 * association table; `send` makes the request.
 */
export async function expectRefusedStoringNothing(
  t: TestServer,
  send: () => Promise<Reply>,
  status: number,
  errcode: string,
): Promise<Reply> {
  const before = associationCounts(t);
  const res = await send();
  expect(res.status, res.text).toBe(status);
  expect(res.json['errcode']).toBe(errcode);
  expect(typeof res.json['error']).toBe('string');
  expect(associationCounts(t)).toEqual(before);
  return res;
}

/** Row counts of both association tables: to show that a refused request stored nothing. */
export function associationCounts(t: TestServer): { local: number; global: number } {
  const count = (table: string) => rows<{ n: number }>(t, `SELECT count(*) AS n FROM ${table}`)[0]!.n;
  return { local: count('local_threepid_associations'), global: count('global_threepid_associations') };
}

export interface InviteRow {
  medium?: string;
  /** casefolded, as store-invite keeps it */
  address: string;
  room_id: string;
  sender: string;
  token: string;
  /** seconds (Sydent's unit) */
  received_ts?: number;
}

/** A pending invite, as store-invite leaves it (sent_ts NULL); resolves once the server's reads see it. */
export async function insertInvite(t: TestServer, invite: InviteRow): Promise<void> {
  await write(
    t,
    'INSERT INTO invite_tokens (medium, address, room_id, sender, token, received_ts, sent_ts) VALUES (?, ?, ?, ?, ?, ?, NULL)',
    invite.medium ?? 'email',
    invite.address,
    invite.room_id,
    invite.sender,
    invite.token,
    invite.received_ts ?? Math.floor(Date.now() / 1000),
  );
}

/**
 * Every row of every table of the server's database, as text per table: equal before and after a refused request
 * shows that it changed nothing (no session, association, invite, account or callback row written or touched).
 */
export function databaseSnapshot(t: TestServer): Record<string, string> {
  const tables = rows<{ name: string }>(t, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name");
  return Object.fromEntries(
    tables.map(({ name }) => [name, JSON.stringify(rows(t, `SELECT * FROM "${name}"`).map((r) => Object.values(r)))]),
  );
}
