import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/clock.js';
import { encodeBase64 } from '../src/crypto/index.js';
import {
  DEFAULT_IP_RANGE_BLACKLIST,
  DnsResolver,
  FederationClient,
  FederationError,
  IpGuard,
  RequestAuthError,
  SERVER_KEYS_MAX_BYTES,
  SERVER_KEYS_MAX_CACHE_MS,
  SERVER_KEYS_MIN_REFETCH_MS,
  SERVER_KEYS_PATH,
  ServerKeyCache,
  verifyHomeserverRequest,
} from '../src/federation/index.js';
import { startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import { HomeserverKeys, KEY_ROUTE, makeSigningKey, type KeyResponseOptions } from './helpers/homeserver-keys.js';
import { rejection } from './helpers/rejection.js';

const T0 = Date.UTC(2030, 0, 1);
const HOUR = 3600_000;

let env: FederationEnv;
let client: FederationClient;
let hsKeys: HomeserverKeys;
let clock: ManualClock;
let cache: ServerKeyCache;
let name: string;

beforeAll(async () => {
  env = await startFederationEnv({});
  name = env.serverName;
  client = new FederationClient({
    ipGuard: new IpGuard({ blacklist: DEFAULT_IP_RANGE_BLACKLIST, whitelist: ['127.0.0.0/8'] }),
    resolver: new DnsResolver({ servers: [env.dns.address] }),
    verifyCerts: true,
    caCert: env.ca.cert,
    timeoutMs: 3000,
  });
});

afterAll(async () => {
  await client?.close();
  await env?.close();
});

beforeEach(() => {
  env.hs.requests.splice(0);
  hsKeys = new HomeserverKeys(name);
  hsKeys.publish(env.hs, () => ({ validUntilTs: T0 + HOUR }));
  clock = new ManualClock(T0);
  cache = new ServerKeyCache(
    (s, p, m) => client.getJson(s, p, m),
    () => clock.now(),
  );
});

const keyRequests = () => hsKeys.keyRequests(env.hs);

describe('ServerKeyCache: fetching and checking', () => {
  it('asks the homeserver itself for /_matrix/key/v2/server with a 50 KiB cap', async () => {
    const calls: unknown[][] = [];
    const fake = new ServerKeyCache(
      async (...args) => {
        calls.push(args);
        return hsKeys.keyResponse();
      },
      () => Date.now(),
    );
    expect(await fake.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
    expect(calls).toEqual([[name, '/_matrix/key/v2/server', 50 * 1024]]);
    expect(SERVER_KEYS_PATH).toBe('/_matrix/key/v2/server');
    expect(SERVER_KEYS_MAX_BYTES).toBe(51200);
  });

  it('returns the published key over loopback TLS', async () => {
    const key = await cache.getKey(name, 'ed25519:abc');
    expect(key).toEqual(hsKeys.key.publicKey);
    expect(env.hs.requests).toHaveLength(1);
    expect(env.hs.requests[0]).toMatchObject({ method: 'GET', url: '/_matrix/key/v2/server' });
  });

  it('accepts a response signed by several listed keys and returns each', async () => {
    const second = makeSigningKey('ed25519:def');
    hsKeys.publish(env.hs, { verifyKeys: [hsKeys.key, second], validUntilTs: T0 + HOUR });
    expect(await cache.getKey(name, 'ed25519:def')).toEqual(second.publicKey);
    expect(await cache.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
    expect(keyRequests()).toBe(1);
  });

  it('accepts a response signed by only one of its listed keys', async () => {
    const second = makeSigningKey('ed25519:def');
    hsKeys.publish(env.hs, { verifyKeys: [hsKeys.key, second], signedBy: [second], validUntilTs: T0 + HOUR });
    expect(await cache.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
  });

  it('does not use old_verify_keys or keys of other algorithms', async () => {
    const old = makeSigningKey('ed25519:old');
    hsKeys.publish(env.hs, {
      validUntilTs: T0 + HOUR,
      extra: { old_verify_keys: { [old.keyId]: { key: encodeBase64(old.publicKey), expired_ts: T0 - HOUR } } },
    });
    expect(await cache.getKey(name, 'ed25519:old')).toBeUndefined();
    cache.clear();
    clock.advance(SERVER_KEYS_MIN_REFETCH_MS);
    hsKeys.publish(env.hs, {
      validUntilTs: T0 + HOUR,
      extra: {
        verify_keys: {
          'ed25519:abc': { key: encodeBase64(hsKeys.key.publicKey) },
          'foo:abc': { key: '!!not base64!!' },
        },
      },
    });
    expect(await cache.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
    expect(await cache.getKey(name, 'foo:abc')).toBeUndefined();
  });

  const rejected: [string, KeyResponseOptions | (() => unknown), RegExp][] = [
    [
      'signed by a key it does not list',
      { signedBy: [makeSigningKey('ed25519:other')] },
      /not signed by any of its verify_keys/,
    ],
    ['signed by another key under the listed id', { signedBy: [makeSigningKey('ed25519:abc')] }, /bad self-signature/],
    ['not signed at all', { signedBy: [] }, /not signed by any of its verify_keys/],
    ['signed under another server name', { signAs: 'other.test' }, /not signed by any of its verify_keys/],
    [
      'changed after signing',
      {
        tamper: (b) => {
          b.valid_until_ts = T0 + 1000 * HOUR;
        },
      },
      /bad self-signature/,
    ],
    [
      'a listed key changed after signing',
      {
        tamper: (b) => {
          (b.verify_keys as Record<string, unknown>)['ed25519:abc'] = { key: encodeBase64(makeSigningKey().publicKey) };
        },
      },
      /bad self-signature/,
    ],
    [
      'for another server (server_name)',
      { serverName: 'evil.test' },
      /server_name is "evil\.test", not the server asked/,
    ],
    ['without server_name', () => ({ verify_keys: {} }), /server_name is missing/],
    ['not an object', () => [1, 2], /not a JSON object/],
    ['without verify_keys', () => ({ server_name: name }), /no verify_keys object/],
    ['with verify_keys a list', () => ({ server_name: name, verify_keys: [] }), /no verify_keys object/],
    [
      'without any ed25519 key',
      () => ({ server_name: name, verify_keys: { 'curve:1': { key: 'AAAA' } } }),
      /no ed25519 key/,
    ],
    [
      'with a key that is not a string',
      () => ({ server_name: name, verify_keys: { 'ed25519:abc': { key: 5 } } }),
      /is not a string/,
    ],
    [
      'with a key that is not base64',
      () => ({ server_name: name, verify_keys: { 'ed25519:abc': { key: 'no!' } } }),
      /is not base64/,
    ],
    [
      'with a key of the wrong length',
      () => ({ server_name: name, verify_keys: { 'ed25519:abc': { key: 'AAAA' } } }),
      /is not 32 bytes/,
    ],
    [
      'with a non-integer valid_until_ts',
      { validUntilTs: null, extra: { valid_until_ts: '99999999999999' } },
      /valid_until_ts is not an integer/,
    ],
  ];

  it.each(rejected)('refuses a key response %s, and does not cache the refusal', async (_what, opts, message) => {
    if (typeof opts === 'function') env.hs.routes[KEY_ROUTE] = () => ({ json: opts() });
    else hsKeys.publish(env.hs, { validUntilTs: T0 + HOUR, ...opts });
    for (let i = 1; i <= 2; i++) {
      const err = await rejection(cache.getKey(name, 'ed25519:abc'));
      expect(err).toBeInstanceOf(RequestAuthError);
      expect((err as RequestAuthError).kind).toBe('bad_keys');
      expect(err.message).toMatch(new RegExp(`^Invalid key response from ${name.replace('.', '\\.')}: `));
      expect(err.message).toMatch(message);
      expect(keyRequests()).toBe(i);
    }
  });

  it('passes an error status through as FederationError', async () => {
    delete env.hs.routes[KEY_ROUTE];
    const err = await rejection(cache.getKey(name, 'ed25519:abc'));
    expect(err).toBeInstanceOf(FederationError);
    expect((err as FederationError).kind).toBe('http');
  });

  it('passes a response over 50 KiB through as FederationError too_large', async () => {
    hsKeys.publish(env.hs, { validUntilTs: T0 + HOUR, extra: { padding: 'x'.repeat(60 * 1024) } });
    const err = await rejection(cache.getKey(name, 'ed25519:abc'));
    expect(err).toBeInstanceOf(FederationError);
    expect((err as FederationError).kind).toBe('too_large');
  });

  it('passes an unreachable homeserver through as FederationError, and tries again next time', async () => {
    const err = await rejection(cache.getKey('hs.test:1', 'ed25519:abc'));
    expect(err).toBeInstanceOf(FederationError);
    expect((err as FederationError).kind).toBe('connect');
    expect(await rejection(cache.getKey('hs.test:1', 'ed25519:abc'))).toBeInstanceOf(FederationError);
    expect(cache.fetches).toBe(2);
  });

  it('passes an unknown host through as FederationError', async () => {
    const err = await rejection(cache.getKey('nowhere.test:8448', 'ed25519:abc'));
    expect(err).toBeInstanceOf(FederationError);
  });
});

describe('ServerKeyCache: caching', () => {
  it('keeps keys until valid_until_ts, then asks again', async () => {
    expect(await cache.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
    clock.set(T0 + HOUR - 1);
    expect(await cache.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
    expect(keyRequests()).toBe(1);
    clock.set(T0 + HOUR);
    expect(await cache.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
    expect(keyRequests()).toBe(2);
  });

  it('keeps keys at most 7 days, whatever valid_until_ts says', async () => {
    hsKeys.publish(env.hs, { validUntilTs: T0 + 365 * 24 * HOUR });
    await cache.getKey(name, 'ed25519:abc');
    clock.set(T0 + SERVER_KEYS_MAX_CACHE_MS - 1);
    await cache.getKey(name, 'ed25519:abc');
    expect(keyRequests()).toBe(1);
    clock.set(T0 + SERVER_KEYS_MAX_CACHE_MS);
    await cache.getKey(name, 'ed25519:abc');
    expect(keyRequests()).toBe(2);
    expect(SERVER_KEYS_MAX_CACHE_MS).toBe(7 * 24 * HOUR);
  });

  it('does not cache a response without valid_until_ts, or one already expired', async () => {
    hsKeys.publish(env.hs, { validUntilTs: null });
    expect(await cache.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
    expect(await cache.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
    expect(keyRequests()).toBe(2);
    hsKeys.publish(env.hs, { validUntilTs: T0 - 1 });
    expect(await cache.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
    expect(await cache.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
    expect(keyRequests()).toBe(4);
  });

  it('shares one fetch between concurrent lookups', async () => {
    const all = await Promise.all([1, 2, 3, 4, 5].map(() => cache.getKey(name, 'ed25519:abc')));
    for (const k of all) expect(k).toEqual(hsKeys.key.publicKey);
    expect(keyRequests()).toBe(1);
  });

  it('asks again for an unknown key id at most once a minute per server', async () => {
    const rotated = makeSigningKey('ed25519:def');
    expect(await cache.getKey(name, 'ed25519:abc')).toBeDefined();
    expect(keyRequests()).toBe(1);
    // the homeserver rotates its key
    hsKeys.publish(env.hs, () => ({ verifyKeys: [rotated], validUntilTs: T0 + HOUR }));

    clock.set(T0 + 1000);
    expect(await cache.getKey(name, 'ed25519:def')).toBeUndefined();
    for (let i = 0; i < 20; i++) expect(await cache.getKey(name, `ed25519:forged${i}`)).toBeUndefined();
    clock.set(T0 + SERVER_KEYS_MIN_REFETCH_MS - 1);
    expect(await cache.getKey(name, 'ed25519:def')).toBeUndefined();
    expect(keyRequests()).toBe(1);

    clock.set(T0 + SERVER_KEYS_MIN_REFETCH_MS);
    expect(await cache.getKey(name, 'ed25519:def')).toEqual(rotated.publicKey);
    expect(keyRequests()).toBe(2);
    // the new response replaced the old one: the retired key is no longer accepted
    expect(await cache.getKey(name, 'ed25519:abc')).toBeUndefined();
    expect(await cache.getKey(name, 'ed25519:forged')).toBeUndefined();
    expect(keyRequests()).toBe(2);
    expect(SERVER_KEYS_MIN_REFETCH_MS).toBe(60_000);
  });

  it('rate-limits unknown key ids after an uncacheable response too', async () => {
    hsKeys.publish(env.hs, { validUntilTs: null });
    await cache.getKey(name, 'ed25519:abc');
    for (let i = 0; i < 10; i++) expect(await cache.getKey(name, `ed25519:forged${i}`)).toBeUndefined();
    expect(keyRequests()).toBe(1);
    clock.advance(SERVER_KEYS_MIN_REFETCH_MS);
    expect(await cache.getKey(name, 'ed25519:forged')).toBeUndefined();
    expect(keyRequests()).toBe(2);
  });

  it('keeps servers apart', async () => {
    const otherEnv = await startFederationEnv({});
    try {
      const otherClient = new FederationClient({
        ipGuard: new IpGuard({ blacklist: DEFAULT_IP_RANGE_BLACKLIST, whitelist: ['127.0.0.0/8'] }),
        resolver: new DnsResolver({ servers: [otherEnv.dns.address] }),
        verifyCerts: true,
        caCert: otherEnv.ca.cert,
        timeoutMs: 3000,
      });
      const otherKeys = new HomeserverKeys(otherEnv.serverName);
      otherKeys.publish(otherEnv.hs, { validUntilTs: T0 + HOUR });
      // one cache, two worlds: route by server name
      const both = new ServerKeyCache(
        (s, p, m) => (s === otherEnv.serverName ? otherClient.getJson(s, p, m) : client.getJson(s, p, m)),
        () => clock.now(),
      );
      expect(await both.getKey(name, 'ed25519:abc')).toEqual(hsKeys.key.publicKey);
      expect(await both.getKey(otherEnv.serverName, 'ed25519:abc')).toEqual(otherKeys.key.publicKey);
      // a server answering with the other's keys is refused (server_name)
      otherEnv.hs.routes[KEY_ROUTE] = () => ({ json: hsKeys.keyResponse({ validUntilTs: T0 + HOUR }) });
      both.clear();
      const err = await rejection(both.getKey(otherEnv.serverName, 'ed25519:abc'));
      expect((err as RequestAuthError).kind).toBe('bad_keys');
      await otherClient.close();
    } finally {
      await otherEnv.close();
    }
  });
});

describe('ServerKeyCache with verifyHomeserverRequest', () => {
  const IS = 'is.example.test';
  const content = { mxid: '@alice:x', threepid: { medium: 'email', address: 'a@b.c' } };
  const request = (authorization: string) => ({
    method: 'POST',
    uri: '/_matrix/identity/v2/3pid/unbind',
    destinationIs: IS,
    content,
    authorization: [authorization],
  });
  const sign = () =>
    hsKeys.authorization({ method: 'POST', uri: '/_matrix/identity/v2/3pid/unbind', destinationIs: IS, content });

  it('verifies from the cache, and fetches again after valid_until_ts', async () => {
    expect(await verifyHomeserverRequest(request(sign()), cache)).toEqual({ origin: name });
    expect(await verifyHomeserverRequest(request(sign()), cache)).toEqual({ origin: name });
    expect(keyRequests()).toBe(1);
    clock.set(T0 + HOUR + 1);
    expect(await verifyHomeserverRequest(request(sign()), cache)).toEqual({ origin: name });
    expect(keyRequests()).toBe(2);
  });

  it('follows a key rotation once the minute has passed', async () => {
    expect(await verifyHomeserverRequest(request(sign()), cache)).toEqual({ origin: name });
    hsKeys.key = makeSigningKey('ed25519:new');
    clock.advance(1000);
    const err = await rejection(verifyHomeserverRequest(request(sign()), cache));
    expect(err.message).toBe('No matching signature found');
    clock.advance(SERVER_KEYS_MIN_REFETCH_MS);
    expect(await verifyHomeserverRequest(request(sign()), cache)).toEqual({ origin: name });
    expect(keyRequests()).toBe(2);
  });

  it('refuses when the key response is for another server', async () => {
    hsKeys.publish(env.hs, { serverName: 'someone-else.test', validUntilTs: T0 + HOUR });
    const err = await rejection(verifyHomeserverRequest(request(sign()), cache));
    expect(err).toBeInstanceOf(RequestAuthError);
    expect((err as RequestAuthError).kind).toBe('bad_keys');
  });
});
