/**
 * `POST /v2/3pid/unbind` signed by the homeserver that owns the mxid, as Synapse sends it: no access token, no
 * session, `Authorization: X-Matrix origin=<hs>,key="ed25519:…",sig="…"` over
 * `{method, uri, origin, destination_is, content}`. The homeserver (loopback HTTPS `hs.test:<port>`, found through
 * the test DNS server) publishes its key at `/_matrix/key/v2/server`. Every refusal keeps the binding.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Reply } from './helpers/email.js';
import { startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import { associationRows, internal, lookupV1, SERVER_NAME, userIdOf, V1 } from './helpers/flows.js';
import { HomeserverKeys, makeSigningKey, type SignRequestInput } from './helpers/homeserver-keys.js';
import { freePort } from './helpers/process.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const URI = '/_matrix/identity/v2/3pid/unbind';

let env: FederationEnv;
let hsKeys: HomeserverKeys;
let t: TestServer;

beforeAll(async () => {
  env = await startFederationEnv({ 'POST /_matrix/federation/v1/3pid/onbind': () => ({ json: {} }) });
  hsKeys = new HomeserverKeys(env.serverName);
  hsKeys.publish(env.hs);
  t = await startTestServer({ conf: env.conf });
});
afterAll(async () => {
  await t?.close();
  await env?.close();
});

async function bind(address: string, mxid: string): Promise<void> {
  const res = await internal(t, 'bind', { medium: 'email', address, mxid });
  expect(res.status, res.text).toBe(200);
  expect((await lookupV1(t, 'email', address)).json['mxid']).toBe(mxid);
}

async function boundTo(address: string): Promise<unknown> {
  const res = await lookupV1(t, 'email', address);
  expect(res.status, res.text).toBe(200);
  return res.json['mxid'] ?? null;
}

/** POSTs `body` exactly as serialised here, with the Authorization header(s) given. */
async function signedUnbind(body: unknown, authorization?: string | string[], path = URI): Promise<Reply> {
  const headers = new Headers({ 'content-type': 'application/json' });
  for (const h of authorization === undefined ? [] : Array.isArray(authorization) ? authorization : [authorization]) {
    headers.append('authorization', h);
  }
  const res = await fetch(t.url(path), { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  const json = (res.headers.get('content-type') ?? '').includes('application/json')
    ? (JSON.parse(text) as Record<string, unknown>)
    : {};
  return { status: res.status, headers: res.headers, json, text };
}

/** Synapse's header for this body (overrides: another key, destination_is, origin). */
function authFor(body: unknown, over: Partial<SignRequestInput> = {}, signer = hsKeys): string {
  return signer.authorization({ method: 'POST', uri: URI, destinationIs: SERVER_NAME, content: body, ...over });
}

async function expectRefused(
  body: { mxid: string; threepid: { address: string } },
  authorization: string | string[] | undefined,
  status: number,
  errcode: string,
): Promise<Reply> {
  const before = await boundTo(body.threepid.address);
  const res = await signedUnbind(body, authorization);
  expect(res.status, res.text).toBe(status);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  expect(res.json['errcode']).toBe(errcode);
  expect(typeof res.json['error']).toBe('string');
  expect(await boundTo(body.threepid.address)).toBe(before);
  return res;
}

describe('a request signed by the homeserver of the mxid', () => {
  it('200 {}: the binding is gone, a tombstone left; no access token needed', async () => {
    const mxid = userIdOf(env, 'bob');
    const address = 'bob.signed@example.com';
    await bind(address, mxid);
    const body = { mxid, threepid: { medium: 'email', address } };
    const res = await signedUnbind(body, authFor(body));
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({});
    expect(await boundTo(address)).toBeNull();
    expect(associationRows(t, 'email', address).local).toMatchObject([{ mxid: null }]);
    // the keys were fetched from the homeserver
    expect(hsKeys.keyRequests(env.hs)).toBeGreaterThanOrEqual(1);
  });

  it('the address in another case; a federation-style destination parameter is ignored', async () => {
    const mxid = userIdOf(env, 'carol');
    await bind('carol.signed@example.com', mxid);
    const body = { mxid, threepid: { medium: 'email', address: 'Carol.Signed@Example.COM' } };
    const res = await signedUnbind(body, authFor(body, { destination: SERVER_NAME }));
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({});
    expect(await boundTo('carol.signed@example.com')).toBeNull();
  });
});

describe('refused homeserver signatures keep the binding', () => {
  const address = 'dave.signed@example.com';
  let mxid: string;
  let body: { mxid: string; threepid: { medium: string; address: string } };
  beforeAll(async () => {
    mxid = userIdOf(env, 'dave');
    await bind(address, mxid);
    body = { mxid, threepid: { medium: 'email', address } };
  });

  it('signed with another key under the published key id: 401 M_FORBIDDEN', async () => {
    await expectRefused(body, authFor(body, { key: makeSigningKey(hsKeys.key.keyId) }), 401, 'M_FORBIDDEN');
  });

  it('signed with a key id the homeserver does not publish: 401 M_FORBIDDEN', async () => {
    await expectRefused(body, authFor(body, { key: makeSigningKey('ed25519:unpublished') }), 401, 'M_FORBIDDEN');
  });

  it('signed for another identity server (destination_is): 401 M_FORBIDDEN', async () => {
    await expectRefused(body, authFor(body, { destinationIs: 'other-is.example.test' }), 401, 'M_FORBIDDEN');
  });

  it('signed over another body, uri or method: 401 M_FORBIDDEN', async () => {
    const other = { mxid, threepid: { medium: 'email', address: 'someone.else@example.com' } };
    await expectRefused(body, authFor(other), 401, 'M_FORBIDDEN');
    await expectRefused(body, authFor(body, { uri: '/_matrix/identity/api/v1/3pid/unbind' }), 401, 'M_FORBIDDEN');
    await expectRefused(body, authFor(body, { method: 'PUT' }), 401, 'M_FORBIDDEN');
  });

  it('the mxid of another server: 403 M_FORBIDDEN "Origin server name does not match mxid"', async () => {
    const eve = '@eve:other.example';
    const eveAddress = 'eve.signed@example.com';
    await bind(eveAddress, eve);
    const eveBody = { mxid: eve, threepid: { medium: 'email', address: eveAddress } };
    const res = await expectRefused(eveBody, authFor(eveBody), 403, 'M_FORBIDDEN');
    expect(res.json['error']).toBe('Origin server name does not match mxid');
    // a server whose name merely ends like ours does not own it either
    const lookalike = { mxid: `@dave:x${env.serverName}`, threepid: { medium: 'email', address } };
    await expectRefused(lookalike, authFor(lookalike), 403, 'M_FORBIDDEN');
  });

  it('no Authorization header (and no session): 401 M_FORBIDDEN', async () => {
    await expectRefused(body, undefined, 401, 'M_FORBIDDEN');
    await expectRefused(body, 'Bearer some-token', 401, 'M_FORBIDDEN');
  });

  it('a malformed X-Matrix header: 401 M_FORBIDDEN', async () => {
    await expectRefused(body, `X-Matrix origin=${env.serverName},key="ed25519:abc"`, 401, 'M_FORBIDDEN');
  });

  it('an origin that is not a server name: 400 M_INVALID_PARAM', async () => {
    const header = authFor(body).replace(`origin=${env.serverName}`, 'origin="not a server!"');
    await expectRefused(body, header, 400, 'M_INVALID_PARAM');
  });

  it('a homeserver that cannot be reached for its keys: 500 M_UNKNOWN', async () => {
    // a port nobody listens on, on the host the test DNS knows
    const port = await freePort();
    const origin = `hs.test:${port}`;
    const deadBody = { mxid: `@dave:${origin}`, threepid: { medium: 'email', address } };
    const deadKeys = new HomeserverKeys(origin);
    await expectRefused(deadBody, authFor(deadBody, {}, deadKeys), 500, 'M_UNKNOWN');
  });

  it('after all that, the right signature still unbinds', async () => {
    expect(await boundTo(address)).toBe(mxid);
    const res = await signedUnbind(body, authFor(body));
    expect(res.status, res.text).toBe(200);
    expect(await boundTo(address)).toBeNull();
  });
});

describe('v1 path', () => {
  it('a homeserver that signs the v1 uri it called is accepted there too', async () => {
    const mxid = userIdOf(env, 'gina');
    const address = 'gina.signed@example.com';
    await bind(address, mxid);
    const body = { mxid, threepid: { medium: 'email', address } };
    const v1Uri = `${V1}/3pid/unbind`;
    const res = await signedUnbind(body, authFor(body, { uri: v1Uri }), v1Uri);
    expect(res.status, res.text).toBe(200);
    expect(await boundTo(address)).toBeNull();
  });
});
