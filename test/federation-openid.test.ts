import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config/index.js';
import {
  createFederationClient,
  DEFAULT_IP_RANGE_BLACKLIST,
  DnsResolver,
  fetchOpenIdUserId,
  FederationClient,
  FederationError,
  IpGuard,
  OpenIdError,
  type FederationClientOptions,
} from '../src/federation/index.js';
import { makeCa, makeCert, type Pem } from './helpers/certs.js';
import { startDnsServer, type DnsServer } from './helpers/dns-server.js';
import { startHomeserver, type Homeserver, type HomeserverReply, type RouteHandler } from './helpers/homeserver.js';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { rejection } from './helpers/rejection.js';
import { tempDir } from './helpers/tmp.js';

const USERINFO = 'GET /_matrix/federation/v1/openid/userinfo';

const cleanups = cleanupsAfterEach();

let ca: Pem;
let hsCert: Pem;
beforeAll(async () => {
  ca = await makeCa();
  hsCert = await makeCert(ca, { hostnames: ['hs.test'] });
});

interface Setup {
  hs: Homeserver;
  dns: DnsServer;
  client: FederationClient;
  /** `hs.test:<port>` */
  name: string;
}

/** a TLS homeserver `hs.test:<port>` answering userinfo with `reply`, and a client that trusts it */
async function setup(
  reply: RouteHandler | HomeserverReply,
  opts: Partial<FederationClientOptions> = {},
): Promise<Setup> {
  const hs = await startHomeserver({
    tls: hsCert,
    routes: { [USERINFO]: typeof reply === 'function' ? reply : () => reply },
  });
  cleanups.push(() => hs.close());
  const dns = await startDnsServer({ A: { 'hs.test': ['127.0.0.1'] } });
  cleanups.push(() => dns.close());
  const client = new FederationClient({
    ipGuard: new IpGuard({ blacklist: DEFAULT_IP_RANGE_BLACKLIST, whitelist: ['127.0.0.0/8'] }),
    resolver: new DnsResolver({ servers: [dns.address] }),
    verifyCerts: true,
    caCert: ca.cert,
    timeoutMs: 3000,
    ...opts,
  });
  cleanups.push(() => client.close());
  return { hs, dns, client, name: `hs.test:${hs.port}` };
}

describe('OpenID userinfo', () => {
  it('returns the sub of the server asked, sending the token URL-encoded', async () => {
    let name = '';
    const s = await setup(() => ({ json: { sub: `@alice:${name}` } }));
    name = s.name;
    expect(await fetchOpenIdUserId(s.client, s.name, 'tok en/+&=')).toBe(`@alice:${s.name}`);
    expect(s.hs.requests).toHaveLength(1);
    expect(s.hs.requests[0]).toMatchObject({
      method: 'GET',
      url: '/_matrix/federation/v1/openid/userinfo?access_token=tok%20en%2F%2B%26%3D',
      headers: { host: s.name },
    });
  });

  it('lower-cases the server name before asking and comparing', async () => {
    let name = '';
    const s = await setup(() => ({ json: { sub: `@bob:${name}` } }));
    name = s.name;
    expect(await fetchOpenIdUserId(s.client, s.name.toUpperCase(), 't')).toBe(`@bob:${s.name}`);
    expect(s.hs.requests[0]?.headers.host).toBe(s.name);
  });

  it.each<[string, HomeserverReply, OpenIdError['kind'], string]>([
    [
      'a sub of another server',
      { json: { sub: '@alice:matrix.org' } },
      'wrong_server',
      'The Matrix homeserver returned a MXID belonging to another homeserver',
    ],
    [
      'no sub',
      { json: { user: '@alice:hs.test' } },
      'no_sub',
      "The Matrix homeserver did not include 'sub' in its response",
    ],
    ['invalid JSON', { text: '<html>hello</html>' }, 'bad_json', 'The Matrix homeserver returned invalid JSON'],
    ['an empty body', { text: '' }, 'bad_json', 'The Matrix homeserver returned invalid JSON'],
    [
      'a sub that is not a string',
      { json: { sub: 42 } },
      'malformed',
      'The Matrix homeserver returned a malformed reply',
    ],
    [
      'JSON that is not an object',
      { json: ['@alice:hs.test'] },
      'malformed',
      'The Matrix homeserver returned a malformed reply',
    ],
    [
      'a sub without a server',
      { json: { sub: '@alice' } },
      'invalid_mxid',
      'The Matrix homeserver returned an invalid MXID',
    ],
    [
      'a sub with an invalid server',
      { json: { sub: '@alice:bad host' } },
      'invalid_mxid',
      'The Matrix homeserver returned an invalid MXID',
    ],
    [
      '401 M_UNKNOWN_TOKEN',
      { status: 401, json: { errcode: 'M_UNKNOWN_TOKEN', error: 'Unknown token' } },
      'rejected',
      'The Matrix homeserver rejected the OpenID token',
    ],
    [
      '403 M_FORBIDDEN',
      { status: 403, json: { errcode: 'M_FORBIDDEN', error: 'no' } },
      'rejected',
      'The Matrix homeserver rejected the OpenID token',
    ],
  ])('refuses %s', async (_what, reply, kind, message) => {
    const s = await setup(reply);
    const err = await rejection(fetchOpenIdUserId(s.client, s.name, 'tok'));
    expect(err).toBeInstanceOf(OpenIdError);
    expect(err).toMatchObject({ kind, message });
  });

  it('reports a refused connection', async () => {
    const s = await setup({ json: {} });
    await s.hs.close(); // the port is now closed
    const err = await rejection(fetchOpenIdUserId(s.client, s.name, 'tok'));
    expect(err).toBeInstanceOf(FederationError);
    expect(err).toMatchObject({ kind: 'connect' });
    expect(err.message).toBe(
      `Unable to contact the Matrix homeserver ${s.name}: connection refused (127.0.0.1:${s.hs.port})`,
    );
  });

  it('times out on a homeserver that never answers', async () => {
    const s = await setup(() => new Promise<HomeserverReply>(() => undefined), { timeoutMs: 300 });
    const started = Date.now();
    const err = await rejection(fetchOpenIdUserId(s.client, s.name, 'tok'));
    expect(err).toBeInstanceOf(FederationError);
    expect(err).toMatchObject({ kind: 'timeout' });
    expect(err.message).toMatch(
      new RegExp(`^Unable to contact the Matrix homeserver ${s.name}: no (complete )?response within 0.3 s$`),
    );
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it.each([
    ['with a Content-Length', {}],
    ['streamed', { 'transfer-encoding': 'chunked' }],
  ])('refuses an oversized body (%s)', async (_what, headers) => {
    const s = await setup({ json: { sub: '@alice:hs.test', pad: 'x'.repeat(6000) }, headers });
    const err = await rejection(fetchOpenIdUserId(s.client, s.name, 'tok'));
    expect(err).toBeInstanceOf(FederationError);
    expect(err).toMatchObject({ kind: 'too_large' });
    expect(err.message).toBe(`The Matrix homeserver ${s.name} sent a response larger than 5120 bytes`);
  });
});

describe('createFederationClient', () => {
  it('builds the client from sydent.conf: DNS servers, extra CA, whitelist, verifycerts', async () => {
    let name = '';
    const s = await setup(() => ({ json: { sub: `@carol:${name}` } }));
    name = s.name;
    const tmp = tempDir('sydent-ts-federation-');
    cleanups.push(tmp.cleanup);
    fs.writeFileSync(path.join(tmp.dir, 'ca.pem'), ca.cert);
    fs.writeFileSync(
      path.join(tmp.dir, 'sydent.conf'),
      [
        '[general]',
        'server.name = is.example.test',
        'ip.whitelist = 127.0.0.1',
        '[http]',
        'client_http_base = https://is.example.test',
        `federation.dns_servers = ${s.dns.address}`,
        'federation.cacert = ca.pem',
        '[db]',
        `db.file = ${path.join(tmp.dir, 'sydent.db')}`,
        '',
      ].join('\n'),
    );
    const { config } = loadConfig({ env: {}, cwd: tmp.dir });
    const client = createFederationClient(config, { timeoutMs: 3000 });
    cleanups.push(() => client.close());
    expect(await fetchOpenIdUserId(client, s.name, 'tok')).toBe(`@carol:${s.name}`);

    // the same without the whitelist: loopback is refused
    const blocked = createFederationClient({ ...config, general: { ...config.general, ipWhitelist: [] } });
    cleanups.push(() => blocked.close());
    expect(await rejection(fetchOpenIdUserId(blocked, s.name, 'tok'))).toMatchObject({ kind: 'blocked' });
  });
});
