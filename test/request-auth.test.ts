import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { notifierHandlers } from '../src/actors/supervisors/notifier.js';
import type { SystemDeps } from '../src/actors/deps.js';
import { ManualClock } from '../src/clock.js';
import { loadConfig } from '../src/config/index.js';
import {
  createFederationClient,
  FederationError,
  parseXMatrixHeader,
  RequestAuthError,
  ServerKeyCache,
  signedRequestObject,
  verifyHomeserverRequest,
  type FederationClient,
  type HomeserverRequest,
  type ServerKeySource,
} from '../src/federation/index.js';
import { startFederationEnv, mergeConf, type FederationEnv } from './helpers/federation-env.js';
import { HomeserverKeys, makeSigningKey, type SignRequestInput } from './helpers/homeserver-keys.js';
import { rejection } from './helpers/rejection.js';
import { tempDir } from './helpers/tmp.js';

function parseError(value: string): RequestAuthError {
  try {
    parseXMatrixHeader(value);
  } catch (err) {
    expect(err).toBeInstanceOf(RequestAuthError);
    return err as RequestAuthError;
  }
  throw new Error(`expected ${JSON.stringify(value)} to be refused`);
}

describe('parseXMatrixHeader', () => {
  it('reads the header Synapse sends (unquoted origin with a port)', () => {
    expect(parseXMatrixHeader('X-Matrix origin=hs.test:8448,key="ed25519:abc",sig="c2lnbmF0dXJl"')).toEqual({
      origin: 'hs.test:8448',
      key: 'ed25519:abc',
      sig: 'c2lnbmF0dXJl',
    });
  });

  it('reads quoted and unquoted values, an IPv6 origin and the destination parameter', () => {
    expect(parseXMatrixHeader('X-Matrix origin="hs.test",key=ed25519:abc,sig=AbC+/d,destination="is.test"')).toEqual({
      origin: 'hs.test',
      key: 'ed25519:abc',
      sig: 'AbC+/d',
      destination: 'is.test',
    });
    expect(parseXMatrixHeader('X-Matrix origin=[::1]:8448,key="ed25519:a",sig="s"').origin).toBe('[::1]:8448');
  });

  it('takes the scheme and parameter names case-insensitively', () => {
    expect(parseXMatrixHeader('x-matrix ORIGIN="hs.test",Key="ed25519:abc",SIG="s"')).toEqual({
      origin: 'hs.test',
      key: 'ed25519:abc',
      sig: 's',
    });
    expect(parseXMatrixHeader('X-MATRIX origin=hs.test,key=k,sig=s').origin).toBe('hs.test');
  });

  it('allows whitespace around "=" and ",", several spaces after the scheme, and empty list elements', () => {
    const v = ' X-Matrix   origin = "hs.test" ,\tkey= "ed25519:abc",, sig =s ,  ';
    expect(parseXMatrixHeader(v)).toEqual({ origin: 'hs.test', key: 'ed25519:abc', sig: 's' });
    expect(parseXMatrixHeader('X-Matrix ,origin=a,key=b,sig=c')).toEqual({ origin: 'a', key: 'b', sig: 'c' });
  });

  it('unescapes quoted-pairs and keeps spaces and commas inside quotes', () => {
    expect(parseXMatrixHeader('X-Matrix origin="h\\s.test",key="a\\"b",sig="x\\\\y, z"')).toEqual({
      origin: 'hs.test',
      key: 'a"b',
      sig: 'x\\y, z',
    });
  });

  it('ignores unknown parameters', () => {
    expect(parseXMatrixHeader('X-Matrix foo=bar,origin=hs.test,key=k,sig=s,x-extra="1, 2"')).toEqual({
      origin: 'hs.test',
      key: 'k',
      sig: 's',
    });
  });

  it.each([
    ['missing origin', 'X-Matrix key="k",sig="s"'],
    ['missing key', 'X-Matrix origin=hs.test,sig="s"'],
    ['missing sig', 'X-Matrix origin=hs.test,key="k"'],
    ['empty origin', 'X-Matrix origin="",key="k",sig="s"'],
    ['empty sig', 'X-Matrix origin=hs.test,key="k",sig=""'],
    ['no parameters', 'X-Matrix'],
    ['only a space', 'X-Matrix '],
    ['empty', ''],
    ['another scheme', 'Bearer abc'],
    ['no space after the scheme', 'X-Matrixorigin=hs.test,key=k,sig=s'],
    ['a comma after the scheme and no space', 'X-Matrix,origin=hs.test,key=k,sig=s'],
    ['no comma between parameters', 'X-Matrix origin=hs.test key=k,sig=s'],
    ['unterminated quote', 'X-Matrix origin=hs.test,key=k,sig="s'],
    ['text after a quoted value', 'X-Matrix origin=hs.test,key="k"x,sig=s'],
    ['a quote inside a bare value', 'X-Matrix origin=hs.test,key=k"x",sig=s'],
    ['a missing value', 'X-Matrix origin=,key=k,sig=s'],
    ['a missing name', 'X-Matrix =hs.test,key=k,sig=s'],
    ['no "="', 'X-Matrix origin,key=k,sig=s'],
    ['a repeated parameter', 'X-Matrix origin=a,origin=b,key=k,sig=s'],
    ['a repeated parameter in another case', 'X-Matrix origin=a,key=k,KEY=j,sig=s'],
    ['a control character in a quoted value', 'X-Matrix origin=hs.test,key="k\u0001",sig=s'],
    ['a backslash at the end of a quoted value', 'X-Matrix origin=hs.test,key=k,sig="s\\'],
    ['a token68 instead of parameters', 'X-Matrix abc=='],
    ['JSON', '{"origin":"hs.test"}'],
  ])('refuses %s as malformed', (_what, value) => {
    const err = parseError(value);
    expect(err.kind).toBe('malformed');
    expect(err.message).toBe('Malformed Authorization header');
  });
});

describe('signedRequestObject', () => {
  it('is what Synapse signs', () => {
    expect(
      signedRequestObject({ method: 'POST', uri: '/u?a=1', destinationIs: 'is.test', content: { a: 1 } }, 'hs.test'),
    ).toEqual({
      method: 'POST',
      uri: '/u?a=1',
      origin: 'hs.test',
      destination_is: 'is.test',
      content: { a: 1 },
      signatures: {},
    });
  });
});

const UNBIND = '/_matrix/identity/v2/3pid/unbind';
const IS_NAME = 'is.example.test';

describe('verifyHomeserverRequest over loopback TLS', () => {
  let env: FederationEnv;
  let client: FederationClient;
  let hsKeys: HomeserverKeys;
  let cleanupTmp: () => void;
  let keys: ServerKeyCache;

  beforeAll(async () => {
    env = await startFederationEnv({});
    // the client the server builds from sydent.conf, pointed at the test DNS server and CA
    const tmp = tempDir();
    cleanupTmp = tmp.cleanup;
    const conf = mergeConf(
      { general: { 'server.name': IS_NAME }, db: { 'db.file': path.join(tmp.dir, 'sydent.db') } },
      env.conf,
    );
    const text = Object.entries(conf)
      .map(([s, v]) => [`[${s}]`, ...Object.entries(v).map(([k, x]) => `${k} = ${x}`)].join('\n'))
      .join('\n\n');
    fs.writeFileSync(path.join(tmp.dir, 'sydent.conf'), `${text}\n`);
    const { config } = loadConfig({ configPath: 'sydent.conf', env: {}, cwd: tmp.dir });
    client = createFederationClient(config, { timeoutMs: 3000 });
    hsKeys = new HomeserverKeys(env.serverName);
  });

  afterAll(async () => {
    await client?.close();
    await env?.close();
    cleanupTmp?.();
  });

  beforeEach(() => {
    env.hs.requests.splice(0);
    hsKeys.key = makeSigningKey('ed25519:abc');
    hsKeys.publish(env.hs);
    keys = new ServerKeyCache((s, p, m) => client.getJson(s, p, m), Date.now);
  });

  const body = () => ({
    mxid: `@alice:${env.serverName}`,
    threepid: { medium: 'email', address: 'alice@example.org' },
  });
  const signing = (over: Partial<SignRequestInput> = {}): SignRequestInput => ({
    method: 'POST',
    uri: UNBIND,
    destinationIs: IS_NAME,
    content: body(),
    ...over,
  });
  const request = (authorization: string[], over: Partial<HomeserverRequest> = {}): HomeserverRequest => ({
    method: 'POST',
    uri: UNBIND,
    destinationIs: IS_NAME,
    content: body(),
    authorization,
    ...over,
  });
  const authError = async (req: HomeserverRequest, source: ServerKeySource = keys): Promise<RequestAuthError> => {
    const err = await rejection(verifyHomeserverRequest(req, source));
    expect(err).toBeInstanceOf(RequestAuthError);
    return err as RequestAuthError;
  };

  it('accepts a request signed as Synapse signs it, fetching the keys once from /_matrix/key/v2/server', async () => {
    const auth = hsKeys.authorization(signing());
    expect(auth).toMatch(
      new RegExp(`^X-Matrix origin=${env.serverName.replace('.', '\\.')},key="ed25519:abc",sig="[A-Za-z0-9+/]+"$`),
    );
    expect(await verifyHomeserverRequest(request([auth]), keys)).toEqual({ origin: env.serverName });
    expect(hsKeys.keyRequests(env.hs)).toBe(1);
    expect(env.hs.requests[0]).toMatchObject({ method: 'GET', url: '/_matrix/key/v2/server' });
    expect(env.hs.requests[0]!.headers.host).toBe(env.serverName);
    // cached: a second request makes no key request
    expect(await verifyHomeserverRequest(request([hsKeys.authorization(signing())]), keys)).toEqual({
      origin: env.serverName,
    });
    expect(hsKeys.keyRequests(env.hs)).toBe(1);
  });

  it('accepts the query string, a destination parameter and other Authorization headers next to X-Matrix', async () => {
    const uri = `${UNBIND}?access_token=abc&x=%20`;
    const auth = hsKeys.authorization(signing({ uri, destination: IS_NAME }));
    expect(await verifyHomeserverRequest(request(['Bearer sometoken', auth], { uri }), keys)).toEqual({
      origin: env.serverName,
    });
  });

  it('accepts a quoted, re-cased and spaced header', async () => {
    const sig = hsKeys.signature(signing());
    const auth = `x-matrix  Origin="${env.serverName}" , KEY = "ed25519:abc" , sig="${sig}"`;
    expect(await verifyHomeserverRequest(request([auth]), keys)).toEqual({ origin: env.serverName });
  });

  it('refuses a request without Authorization headers, or without an X-Matrix one', async () => {
    let err = await authError(request([]));
    expect(err.kind).toBe('missing');
    expect(err.message).toBe('Missing Authorization headers');
    err = await authError(request(['Bearer abc', 'Basic Zm9vOmJhcg==']));
    expect(err.kind).toBe('missing');
    expect(err.message).toBe('Missing X-Matrix Authorization header');
    expect(env.hs.requests).toHaveLength(0);
  });

  it('refuses a malformed X-Matrix header even when another one is good', async () => {
    const err = await authError(request([hsKeys.authorization(signing()), 'X-Matrix origin=hs.test']));
    expect(err.kind).toBe('malformed');
    expect(err.message).toBe('Malformed Authorization header');
  });

  it('refuses an origin that is not a server name, without fetching anything', async () => {
    const err = await authError(request(['X-Matrix origin=bad_name!,key="ed25519:abc",sig="AAAA"']));
    expect(err.kind).toBe('invalid_origin');
    expect(err.message).toBe("X-Matrix header's origin parameter must be a valid Matrix server name");
    expect(env.hs.requests).toHaveLength(0);
  });

  it('refuses a key id the homeserver does not publish', async () => {
    const sig = hsKeys.signature(signing());
    const err = await authError(request([`X-Matrix origin=${env.serverName},key="ed25519:other",sig="${sig}"`]));
    expect(err.kind).toBe('bad_signature');
    expect(err.message).toBe('No matching signature found');
  });

  it('skips signatures under other algorithms without asking for keys', async () => {
    const err = await authError(request([`X-Matrix origin=${env.serverName},key="curve25519:abc",sig="AAAA"`]));
    expect(err.message).toBe('No matching signature found');
    expect(env.hs.requests).toHaveLength(0);
  });

  it('refuses a signature made by another key under the published key id', async () => {
    const impostor = makeSigningKey('ed25519:abc');
    const err = await authError(request([hsKeys.authorization(signing({ key: impostor }))]));
    expect(err.kind).toBe('bad_signature');
    expect(err.message).toMatch(new RegExp(`^Unable to verify signature for ${env.serverName.replace('.', '\\.')}: `));
  });

  it('refuses tampered content', async () => {
    const auth = hsKeys.authorization(signing());
    const tampered = { ...body(), mxid: `@mallory:${env.serverName}` };
    expect((await authError(request([auth], { content: tampered }))).kind).toBe('bad_signature');
  });

  it('refuses a signature for another identity server (destination_is)', async () => {
    const auth = hsKeys.authorization(signing({ destinationIs: 'other-is.test' }));
    expect((await authError(request([auth]))).kind).toBe('bad_signature');
  });

  it('refuses a signature over another method or URI', async () => {
    expect((await authError(request([hsKeys.authorization(signing({ method: 'PUT' }))]))).kind).toBe('bad_signature');
    expect(
      (await authError(request([hsKeys.authorization(signing({ uri: '/_matrix/identity/api/v1/3pid/unbind' }))]))).kind,
    ).toBe('bad_signature');
    expect((await authError(request([hsKeys.authorization(signing())], { uri: `${UNBIND}?x=1` }))).kind).toBe(
      'bad_signature',
    );
  });

  it('refuses content that is not canonical JSON (a float) as a bad signature', async () => {
    const content = { ...body(), n: 1.5 };
    const sig = Buffer.alloc(64).toString('base64').replace(/=+$/, '');
    const err = await authError(
      request([`X-Matrix origin=${env.serverName},key="ed25519:abc",sig="${sig}"`], { content }),
    );
    expect(err.message).toContain('not an integer');
    expect(err.kind).toBe('bad_signature');
  });

  it('uses the first signature with a known key: a later good one does not rescue a bad one', async () => {
    const second = makeSigningKey('ed25519:def');
    hsKeys.publish(env.hs, { verifyKeys: [hsKeys.key, second] });
    const good = hsKeys.authorization(signing({ key: second }));
    const bad = hsKeys.authorization(signing({ content: { other: true } }));
    expect((await authError(request([bad, good]))).kind).toBe('bad_signature');
    expect(await verifyHomeserverRequest(request([good, bad]), keys)).toEqual({ origin: env.serverName });
    // an unknown key id first is skipped
    const unknown = `X-Matrix origin=${env.serverName},key="ed25519:zzz",sig="AAAA"`;
    expect(await verifyHomeserverRequest(request([unknown, good]), keys)).toEqual({ origin: env.serverName });
  });

  it("takes the last signature given for a key id, and the last header's origin", async () => {
    const good = hsKeys.authorization(signing());
    const bad = hsKeys.authorization(signing({ content: { other: true } }));
    expect(await verifyHomeserverRequest(request([bad, good]), keys)).toEqual({ origin: env.serverName });
    expect((await authError(request([good, bad]))).kind).toBe('bad_signature');
    // a header for another origin before ours is ignored; after ours, it is the origin checked
    const other = 'X-Matrix origin=other.test,key="ed25519:abc",sig="AAAA"';
    expect(await verifyHomeserverRequest(request([other, good]), keys)).toEqual({ origin: env.serverName });
  });

  it('passes key-fetch failures through as FederationError', async () => {
    delete env.hs.routes['GET /_matrix/key/v2/server'];
    const err = await rejection(verifyHomeserverRequest(request([hsKeys.authorization(signing())]), keys));
    expect(err).toBeInstanceOf(FederationError);
    expect((err as FederationError).kind).toBe('http');
    expect((err as FederationError).status).toBe(404);
  });

  it('passes an unreachable homeserver through as FederationError', async () => {
    // a port where nothing listens: connection refused
    const gone = new HomeserverKeys('hs.test:1');
    const err = await rejection(
      verifyHomeserverRequest(request([gone.authorization(signing())], { content: body() }), keys),
    );
    expect(err).toBeInstanceOf(FederationError);
    expect(err.message).toContain('Unable to contact the Matrix homeserver hs.test:1');
  });

  it('refuses a request when the key response is not self-signed properly', async () => {
    hsKeys.publish(env.hs, { signedBy: [makeSigningKey('ed25519:abc')] });
    const err = await authError(request([hsKeys.authorization(signing())]));
    expect(err.kind).toBe('bad_keys');
    expect(err.message).toMatch(/^Invalid key response from hs\.test:\d+: bad self-signature/);
  });

  it('is what the notifier answers to verifyRequest', async () => {
    const clock = new ManualClock(Date.now());
    const resource = { federation: client, deps: { clock } as unknown as SystemDeps } as unknown as Parameters<
      typeof notifierHandlers.verifyRequest
    >[1];
    const auth = hsKeys.authorization(signing());
    expect(await notifierHandlers.verifyRequest(request([auth]), resource)).toEqual({ origin: env.serverName });
    // the cache lives in the resource: the second check makes no key request
    expect(await notifierHandlers.verifyRequest(request([auth]), resource)).toEqual({ origin: env.serverName });
    expect(hsKeys.keyRequests(env.hs)).toBe(1);
    const err = await rejection(notifierHandlers.verifyRequest(request(['Bearer x']), resource));
    expect(err).toBeInstanceOf(RequestAuthError);
  });
});
