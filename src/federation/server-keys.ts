/**
 * Homeserver signing keys for request authentication: `GET /_matrix/key/v2/server` on the homeserver itself
 * (no notaries), through the federation client. Unlike Sydent (sydent-behaviour §5.1, §12 item 16) the answer
 * is checked before use: `server_name` must be the server asked, and the response must carry a valid signature
 * of that server by one of the keys it lists.
 *
 * Keys are cached until `valid_until_ts` (capped at a week); a response without one is not cached. A key id the
 * cached response does not list makes us ask again (the homeserver may have rotated its key), but at most once a
 * minute per server, so requests with made-up key ids cannot make us hammer a homeserver. Concurrent lookups for
 * one server share a single fetch.
 */
import { Base64Error, SignatureError, decodeBase64, verifySignedJson } from '../crypto/index.js';
import { RequestAuthError, type ServerKeySource } from './request-auth.js';

export const SERVER_KEYS_PATH = '/_matrix/key/v2/server';
/** Sydent's cap on the key response */
export const SERVER_KEYS_MAX_BYTES = 50 * 1024;
/** the longest we trust a key response, whatever its valid_until_ts says */
export const SERVER_KEYS_MAX_CACHE_MS = 7 * 24 * 3600_000;
/** the least time between two fetches for one server caused by an unknown key id */
export const SERVER_KEYS_MIN_REFETCH_MS = 60_000;
/** servers remembered at most (oldest dropped first), so made-up origins cannot grow the cache without bound */
export const SERVER_KEYS_MAX_SERVERS = 10_000;

const ED25519_KEY_BYTES = 32;

/** FederationClient.getJson, or anything with its contract (throws FederationError on failure) */
export type FetchJson = (serverName: string, path: string, maxBytes: number) => Promise<unknown>;

interface Entry {
  /** ed25519 verify keys by key id */
  keys: Map<string, Uint8Array>;
  fetchedAt: number;
  /** usable for verification while now < expiresAt (== fetchedAt when the response may not be cached) */
  expiresAt: number;
}

export class ServerKeyCache implements ServerKeySource {
  private readonly entries = new Map<string, Entry>();
  private readonly inflight = new Map<string, Promise<Entry>>();
  /** fetches made, for tests and stats */
  fetches = 0;

  constructor(
    private readonly fetchJson: FetchJson,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The verify key `keyId` of `serverName`, or undefined when the server does not list it. Throws
   * FederationError when the server cannot be asked, RequestAuthError 'bad_keys' when its answer is unusable.
   */
  async getKey(serverName: string, keyId: string): Promise<Uint8Array | undefined> {
    const now = this.now();
    const entry = this.entries.get(serverName);
    if (entry) {
      const recent = now - entry.fetchedAt < SERVER_KEYS_MIN_REFETCH_MS && now >= entry.fetchedAt;
      if (entry.expiresAt > now) {
        const key = entry.keys.get(keyId);
        if (key) return key;
        if (recent) return undefined;
      } else if (recent && !entry.keys.has(keyId)) {
        // an uncacheable (or expired) answer from under a minute ago did not list this id: do not ask again yet
        return undefined;
      }
    }
    const fresh = await this.fetch(serverName);
    return fresh.keys.get(keyId);
  }

  /** forgets everything (tests, or an operator action) */
  clear(): void {
    this.entries.clear();
  }

  private fetch(serverName: string): Promise<Entry> {
    const running = this.inflight.get(serverName);
    if (running) return running;
    const p = this.load(serverName).finally(() => this.inflight.delete(serverName));
    this.inflight.set(serverName, p);
    return p;
  }

  private async load(serverName: string): Promise<Entry> {
    this.fetches++;
    const body = await this.fetchJson(serverName, SERVER_KEYS_PATH, SERVER_KEYS_MAX_BYTES);
    const fetchedAt = this.now();
    const { keys, validUntilTs } = parseKeyResponse(serverName, body);
    const expiresAt =
      validUntilTs === undefined ? fetchedAt : Math.min(validUntilTs, fetchedAt + SERVER_KEYS_MAX_CACHE_MS);
    const entry: Entry = { keys, fetchedAt, expiresAt: Math.max(expiresAt, fetchedAt) };
    this.entries.delete(serverName);
    this.entries.set(serverName, entry);
    while (this.entries.size > SERVER_KEYS_MAX_SERVERS) {
      const oldest = this.entries.keys().next().value;
      if (oldest === undefined) break;
      this.entries.delete(oldest);
    }
    return entry;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function badKeys(serverName: string, what: string, cause?: unknown): RequestAuthError {
  return new RequestAuthError(
    'bad_keys',
    `Invalid key response from ${serverName}: ${what}`,
    cause === undefined ? {} : { cause },
  );
}

/**
 * Checks a `/_matrix/key/v2/server` answer from `serverName` and returns its ed25519 verify keys. Keys of other
 * algorithms are ignored; `old_verify_keys` are not used (they may not authenticate new requests).
 */
export function parseKeyResponse(
  serverName: string,
  body: unknown,
): { keys: Map<string, Uint8Array>; validUntilTs: number | undefined } {
  if (!isRecord(body)) throw badKeys(serverName, 'not a JSON object');
  if (body.server_name !== serverName) {
    const got = typeof body.server_name === 'string' ? JSON.stringify(body.server_name.slice(0, 100)) : 'missing';
    throw badKeys(serverName, `server_name is ${got}, not the server asked`);
  }
  const verifyKeys = body.verify_keys;
  if (!isRecord(verifyKeys)) throw badKeys(serverName, 'no verify_keys object');

  const keys = new Map<string, Uint8Array>();
  for (const [keyId, value] of Object.entries(verifyKeys)) {
    if (!keyId.startsWith('ed25519:')) continue;
    if (!isRecord(value)) throw badKeys(serverName, `verify_keys.${keyId} is not an object`);
    if (!('key' in value)) continue;
    if (typeof value.key !== 'string') throw badKeys(serverName, `verify_keys.${keyId}.key is not a string`);
    let key: Uint8Array;
    try {
      key = decodeBase64(value.key);
    } catch (err) {
      if (err instanceof Base64Error) throw badKeys(serverName, `verify_keys.${keyId}.key is not base64`, err);
      throw err;
    }
    if (key.length !== ED25519_KEY_BYTES)
      throw badKeys(serverName, `verify_keys.${keyId}.key is not ${ED25519_KEY_BYTES} bytes`);
    keys.set(keyId, key);
  }
  if (keys.size === 0) throw badKeys(serverName, 'no ed25519 key in verify_keys');

  let validUntilTs: number | undefined;
  if (body.valid_until_ts !== undefined) {
    if (typeof body.valid_until_ts !== 'number' || !Number.isSafeInteger(body.valid_until_ts)) {
      throw badKeys(serverName, 'valid_until_ts is not an integer');
    }
    validUntilTs = body.valid_until_ts;
  }

  // the self-signature: every signature by a listed key must verify, and there must be at least one
  const sigs =
    isRecord(body.signatures) && Object.hasOwn(body.signatures, serverName) ? body.signatures[serverName] : undefined;
  let verified = false;
  if (isRecord(sigs)) {
    for (const keyId of Object.keys(sigs)) {
      const key = keys.get(keyId);
      if (!key) continue;
      try {
        verifySignedJson(body, serverName, keyId, key);
      } catch (err) {
        if (err instanceof SignatureError) throw badKeys(serverName, `bad self-signature: ${err.message}`, err);
        throw badKeys(serverName, `cannot check the self-signature: ${String(err)}`, err);
      }
      verified = true;
    }
  }
  if (!verified) throw badKeys(serverName, 'not signed by any of its verify_keys');
  return { keys, validUntilTs };
}
