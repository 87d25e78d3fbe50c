import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  cachePeriodMs,
  DEFAULT_IP_RANGE_BLACKLIST,
  DnsResolver,
  FederationClient,
  FederationError,
  IpGuard,
  pickSrvRecord,
  WellKnownCache,
  type FederationClientOptions,
} from '../src/federation/index.js';
import { makeCa, makeCert, type Pem } from './helpers/certs.js';
import { startDnsServer, type DnsRecords, type DnsServer } from './helpers/dns-server.js';
import { startHomeserver, type Homeserver, type RouteHandler } from './helpers/homeserver.js';

const LOOPBACK = ['127.0.0.0/8'];
const WELL_KNOWN = 'GET /.well-known/matrix/server';
const KEYS = 'GET /_matrix/key/v2/server';
const HOUR = 3600_000;

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

let ca: Pem;
beforeAll(async () => {
  ca = await makeCa();
});

async function dnsServer(records: DnsRecords): Promise<DnsServer> {
  const dns = await startDnsServer(records);
  cleanups.push(() => dns.close());
  return dns;
}

async function homeserver(routes: Record<string, RouteHandler>, tls: Pem | null): Promise<Homeserver> {
  const hs = await startHomeserver({ routes, ...(tls ? { tls } : {}) });
  cleanups.push(() => hs.close());
  return hs;
}

/** a client resolving through `dns`, trusting the test CA, with loopback whitelisted unless told otherwise */
function client(
  dns: DnsServer | null,
  opts: Partial<FederationClientOptions> & { whitelist?: string[] } = {},
): FederationClient {
  const { whitelist = LOOPBACK, ...rest } = opts;
  const c = new FederationClient({
    ipGuard: new IpGuard({ blacklist: DEFAULT_IP_RANGE_BLACKLIST, whitelist }),
    resolver: new DnsResolver({ servers: dns ? [dns.address] : ['127.0.0.1:1'] }),
    verifyCerts: true,
    caCert: ca.cert,
    timeoutMs: 3000,
    random: () => 0,
    ...rest,
  });
  cleanups.push(() => c.close());
  return c;
}

async function failure(p: Promise<unknown>): Promise<FederationError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(FederationError);
    return err as FederationError;
  }
  throw new Error('expected a FederationError');
}

/** a port nothing listens on (just released by a server we started) */
async function deadPort(): Promise<number> {
  const hs = await startHomeserver({ routes: {} });
  const { port } = hs;
  await hs.close();
  return port;
}

describe('IpGuard', () => {
  const guard = new IpGuard({ blacklist: DEFAULT_IP_RANGE_BLACKLIST });

  it.each([
    '127.0.0.1',
    '10.1.2.3',
    '192.168.0.1',
    '169.254.169.254',
    '::1',
    'fe80::1',
    'fe80::1%eth0',
    '[::1]',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::127.0.0.1',
    '2002:7f00:1::1',
    '::ffff:10.0.0.1',
    // not in Sydent's list, but connecting there reaches the local host
    '0.0.0.0',
    '::',
    'not-an-ip',
    '',
  ])('blocks %s by default', (ip) => {
    expect(guard.isAllowed(ip)).toBe(false);
  });

  it.each(['8.8.8.8', '2001:4860:4860::8888', '::ffff:8.8.8.8', '172.32.0.1'])('allows %s', (ip) => {
    expect(guard.isAllowed(ip)).toBe(true);
  });

  it('lets the whitelist re-allow a blocked range, in its IPv6 forms too', () => {
    const g = new IpGuard({ blacklist: DEFAULT_IP_RANGE_BLACKLIST, whitelist: ['10.1.0.0/16'] });
    expect(g.isAllowed('10.1.2.3')).toBe(true);
    expect(g.isAllowed('::ffff:10.1.2.3')).toBe(true);
    expect(g.isAllowed('10.2.0.1')).toBe(false);
  });

  it('uses a custom blacklist', () => {
    const g = new IpGuard({ blacklist: ['203.0.113.0/24'] });
    expect(g.isAllowed('203.0.113.9')).toBe(false);
    expect(g.isAllowed('::ffff:203.0.113.9')).toBe(false);
    expect(g.isAllowed('127.0.0.1')).toBe(true);
    for (const range of ['nonsense/8', 'fe80::zz/10', '1.2.3/8', '10.0.0.0/33', '::1/129', 'fc00::/x'])
      expect(() => new IpGuard({ blacklist: [range] }), range).toThrow(/Invalid IP range provided/);
    const v6 = new IpGuard({ blacklist: ['2001:db8::/32'] });
    expect(v6.isAllowed('2001:db8::1')).toBe(false);
    expect(v6.isAllowed('2001:db9::1')).toBe(true);
  });
});

describe('SRV choice and cache headers', () => {
  const records = [
    { priority: 20, weight: 100, port: 1, name: 'late.test' },
    { priority: 10, weight: 0, port: 2, name: 'zero.test' },
    { priority: 10, weight: 3, port: 3, name: 'three.test' },
    { priority: 10, weight: 1, port: 4, name: 'one.test' },
  ];

  it('takes the lowest priority, then a weighted random pick like Sydent', () => {
    // randint(0, 4): 0 → the first record even with weight 0, 1-3 → weight 3, 4 → weight 1
    expect(pickSrvRecord(records, () => 0).name).toBe('zero.test');
    expect(pickSrvRecord(records, () => 0.3).name).toBe('three.test');
    expect(pickSrvRecord(records, () => 0.7).name).toBe('three.test');
    expect(pickSrvRecord(records, () => 0.99).name).toBe('one.test');
  });

  it('reads Cache-Control and Expires', () => {
    const now = Date.parse('2024-01-01T00:00:00Z');
    expect(cachePeriodMs({ 'cache-control': 'public, max-age=600' }, now)).toBe(600_000);
    expect(cachePeriodMs({ 'cache-control': 'no-store, max-age=600' }, now)).toBe(0);
    expect(cachePeriodMs({ expires: 'Mon, 01 Jan 2024 01:00:00 GMT' }, now)).toBe(HOUR);
    expect(cachePeriodMs({ expires: 'soon' }, now)).toBe(0);
    expect(cachePeriodMs({ 'cache-control': 'max-age=oops', expires: 'Mon, 01 Jan 2024 00:00:10 GMT' }, now)).toBe(
      10_000,
    );
    expect(cachePeriodMs({}, now)).toBeNull();
  });
});

describe('discovery', () => {
  it('follows .well-known delegation, and caches it by max-age', async () => {
    const dns = await dnsServer({ A: { 'example.test': ['127.0.0.1'], 'other.test': ['127.0.0.1'] } });
    const tls = await makeCert(ca, { hostnames: ['example.test', 'other.test'] });
    let hsPort = 0;
    const hs = await homeserver(
      {
        [WELL_KNOWN]: () => ({
          json: { 'm.server': `other.test:${hsPort}` },
          headers: { 'cache-control': 'max-age=7200' },
        }),
        [KEYS]: () => ({ json: { server_name: 'example.test' } }),
      },
      tls,
    );
    hsPort = hs.port;
    let now = 1_000_000_000;
    const c = client(dns, { now: () => now, wellKnownPort: hs.port });

    expect(await c.resolveServer('example.test')).toEqual({
      host: 'other.test',
      port: hs.port,
      hostHeader: `other.test:${hs.port}`,
      tlsServerName: 'other.test',
    });
    const wellKnown = () => hs.requests.filter((r) => r.url === '/.well-known/matrix/server');
    expect(wellKnown()).toHaveLength(1);
    expect(wellKnown()[0]?.headers.host).toBe('example.test');

    // the real request goes to the delegated server, named in the Host header
    expect(await c.getJson('example.test', '/_matrix/key/v2/server', 1024)).toEqual({ server_name: 'example.test' });
    expect(wellKnown()).toHaveLength(1);
    expect(hs.requests.at(-1)?.headers.host).toBe(`other.test:${hs.port}`);

    now += 2 * HOUR - 1;
    await c.resolveServer('example.test');
    expect(wellKnown()).toHaveLength(1);
    now += 2;
    await c.resolveServer('example.test');
    expect(wellKnown()).toHaveLength(2);
  });

  it('caches a delegation without cache headers for 24 hours, a failed lookup for 1 hour', async () => {
    const dns = await dnsServer({ A: { 'a.test': ['127.0.0.1'], 'b.test': ['127.0.0.1'] } });
    const tls = await makeCert(ca, { hostnames: ['a.test', 'b.test'] });
    const hs = await homeserver(
      {
        [WELL_KNOWN]: (req) =>
          req.headers.host === 'a.test' ? { json: { 'm.server': 'hs.a.test:443' } } : { status: 404 },
      },
      tls,
    );
    let now = 5_000_000;
    const cache = new WellKnownCache({ now: () => now });
    const c = client(dns, { wellKnownCache: cache, wellKnownPort: hs.port });
    const count = (host: string) => hs.requests.filter((r) => r.headers.host === host).length;

    expect((await c.resolveServer('a.test')).host).toBe('hs.a.test');
    expect(await c.resolveServer('b.test')).toEqual({
      host: 'b.test',
      port: 8448,
      hostHeader: 'b.test',
      tlsServerName: 'b.test',
    });
    expect([count('a.test'), count('b.test')]).toEqual([1, 1]);

    now += HOUR - 1;
    await c.resolveServer('a.test');
    await c.resolveServer('b.test');
    expect([count('a.test'), count('b.test')]).toEqual([1, 1]);
    now += 2;
    await c.resolveServer('b.test');
    expect(count('b.test')).toBe(2);

    now += 23 * HOUR - 2;
    await c.resolveServer('a.test');
    expect(count('a.test')).toBe(1);
    now += 2;
    await c.resolveServer('a.test');
    expect(count('a.test')).toBe(2);
  });

  it('caps the cache period at 48 hours and does not cache no-store', async () => {
    const dns = await dnsServer({ A: { 'a.test': ['127.0.0.1'], 'b.test': ['127.0.0.1'] } });
    const tls = await makeCert(ca, { hostnames: ['a.test', 'b.test'] });
    const hs = await homeserver(
      {
        [WELL_KNOWN]: (req) => ({
          json: { 'm.server': 'hs.test:8448' },
          headers: { 'cache-control': req.headers.host === 'a.test' ? 'max-age=999999999' : 'no-store' },
        }),
      },
      tls,
    );
    let now = 0;
    const c = client(dns, { now: () => now, wellKnownPort: hs.port });
    const count = (host: string) => hs.requests.filter((r) => r.headers.host === host).length;
    await c.resolveServer('a.test');
    await c.resolveServer('b.test');
    await c.resolveServer('b.test');
    expect([count('a.test'), count('b.test')]).toEqual([1, 2]);
    now += 48 * HOUR - 1;
    await c.resolveServer('a.test');
    expect(count('a.test')).toBe(1);
    now += 2;
    await c.resolveServer('a.test');
    expect(count('a.test')).toBe(2);
  });

  it('follows .well-known redirects, but not to plain HTTP', async () => {
    const dns = await dnsServer({
      A: { 'a.test': ['127.0.0.1'], 'b.test': ['127.0.0.1'], 'redirected.test': ['127.0.0.1'] },
    });
    const tls = await makeCert(ca, { hostnames: ['a.test', 'b.test', 'redirected.test'] });
    let port = 0;
    const hs = await homeserver(
      {
        [WELL_KNOWN]: (req) => ({
          status: 302,
          headers: {
            location:
              req.headers.host === 'a.test'
                ? `https://redirected.test:${port}/moved?x=1`
                : `http://redirected.test:${port}/moved`,
          },
        }),
        'GET /moved': () => ({ json: { 'm.server': 'delegated.test:1234' } }),
      },
      tls,
    );
    port = hs.port;
    const c = client(dns, { wellKnownPort: hs.port });
    expect(await c.resolveServer('a.test')).toMatchObject({ host: 'delegated.test', port: 1234 });
    expect(hs.requests.at(-1)).toMatchObject({ url: '/moved?x=1', headers: { host: `redirected.test:${port}` } });
    expect(await c.resolveServer('b.test')).toMatchObject({ host: 'b.test', port: 8448 });
  });

  it.each([
    ['not JSON', { text: '{"m.server": ' }],
    ['not an object', { json: ['m.server'] }],
    ['m.server not a string', { json: { 'm.server': 42 } }],
    ['m.server not a server name', { json: { 'm.server': 'bad name' } }],
    ['a 500', { status: 500, json: { 'm.server': 'x.test' } }],
    ['too large', { json: { 'm.server': 'x.test', pad: 'x'.repeat(60 * 1024) } }],
  ])('ignores a .well-known that is %s', async (_what, reply) => {
    const dns = await dnsServer({ A: { 'a.test': ['127.0.0.1'] } });
    const hs = await homeserver({ [WELL_KNOWN]: () => reply }, await makeCert(ca, { hostnames: ['a.test'] }));
    const c = client(dns, { wellKnownPort: hs.port });
    expect(await c.resolveServer('a.test')).toEqual({
      host: 'a.test',
      port: 8448,
      hostHeader: 'a.test',
      tlsServerName: 'a.test',
    });
    expect(hs.requests).toHaveLength(1);
  });

  it('uses SRV _matrix-fed._tcp in preference to _matrix._tcp, with the server name as Host and TLS name', async () => {
    const tls = await makeCert(ca, { hostnames: ['srv.test'] });
    const hs = await homeserver({ [KEYS]: () => ({ json: { ok: true } }) }, tls);
    const dns = await dnsServer({
      A: { 'srv.test': ['127.0.0.1'], 'target.test': ['127.0.0.1'] },
      SRV: {
        '_matrix-fed._tcp.srv.test': [{ priority: 10, weight: 1, port: hs.port, target: 'target.test' }],
        '_matrix._tcp.srv.test': [{ priority: 0, weight: 1, port: 1, target: 'legacy.test' }],
      },
    });
    // nothing serves .well-known here: the lookup fails (refused) and discovery goes on to SRV
    const c = client(dns, { wellKnownPort: await deadPort() });
    expect(await c.resolveServer('srv.test')).toEqual({
      host: 'target.test',
      port: hs.port,
      hostHeader: 'srv.test',
      tlsServerName: 'srv.test',
    });
    // the certificate is for srv.test, not for the SRV target: it must be accepted
    expect(await c.getJson('srv.test', '/_matrix/key/v2/server', 1024)).toEqual({ ok: true });
    expect(hs.requests[0]?.headers.host).toBe('srv.test');
    expect(dns.queries.map((q) => `${q.type} ${q.name}`)).toContain('SRV _matrix-fed._tcp.srv.test');
    expect(dns.queries.map((q) => q.name)).not.toContain('_matrix._tcp.srv.test');
  });

  it('falls back to _matrix._tcp, then to port 8448', async () => {
    const dns = await dnsServer({
      A: { 'legacy.test': ['127.0.0.1'], 'plain.test': ['127.0.0.1'] },
      SRV: { '_matrix._tcp.legacy.test': [{ priority: 0, weight: 1, port: 8999, target: 'hs.legacy.test.' }] },
    });
    const c = client(dns, { wellKnownPort: await deadPort() });
    expect(await c.resolveServer('legacy.test')).toEqual({
      host: 'hs.legacy.test',
      port: 8999,
      hostHeader: 'legacy.test',
      tlsServerName: 'legacy.test',
    });
    expect(await c.resolveServer('plain.test')).toEqual({
      host: 'plain.test',
      port: 8448,
      hostHeader: 'plain.test',
      tlsServerName: 'plain.test',
    });
    expect(dns.queries.map((q) => `${q.type} ${q.name}`)).toEqual(
      expect.arrayContaining(['SRV _matrix-fed._tcp.plain.test', 'SRV _matrix._tcp.plain.test']),
    );
  });

  it('refuses a server whose SRV record is "."', async () => {
    const dns = await dnsServer({
      A: { 'none.test': ['127.0.0.1'] },
      SRV: { '_matrix-fed._tcp.none.test': [{ priority: 0, weight: 0, port: 0, target: '.' }] },
    });
    const c = client(dns, { wellKnownPort: await deadPort() });
    const err = await failure(c.resolveServer('none.test'));
    expect(err.kind).toBe('dns');
    expect(err.message).toBe(
      'Unable to contact the Matrix homeserver none.test: the SRV record _matrix-fed._tcp.none.test says the service is unavailable',
    );
  });

  it('runs SRV on the delegated host when m.server has no port', async () => {
    const tls = await makeCert(ca, { hostnames: ['example.test'] });
    const hs = await homeserver({ [WELL_KNOWN]: () => ({ json: { 'm.server': 'delegated.test' } }) }, tls);
    const dns = await dnsServer({
      A: { 'example.test': ['127.0.0.1'] },
      SRV: {
        '_matrix-fed._tcp.delegated.test': [{ priority: 0, weight: 1, port: 7000, target: 'box.delegated.test' }],
      },
    });
    const c = client(dns, { wellKnownPort: hs.port });
    expect(await c.resolveServer('example.test')).toEqual({
      host: 'box.delegated.test',
      port: 7000,
      hostHeader: 'delegated.test',
      tlsServerName: 'delegated.test',
    });
  });

  it('uses IP literals and explicit ports directly, without DNS or .well-known', async () => {
    const dns = await dnsServer({});
    const c = client(dns);
    expect(await c.resolveServer('127.0.0.1:1234')).toEqual({
      host: '127.0.0.1',
      port: 1234,
      hostHeader: '127.0.0.1:1234',
      tlsServerName: '127.0.0.1',
    });
    expect(await c.resolveServer('192.0.2.7')).toEqual({
      host: '192.0.2.7',
      port: 8448,
      hostHeader: '192.0.2.7',
      tlsServerName: '192.0.2.7',
    });
    expect(await c.resolveServer('[2001:db8::1]')).toEqual({
      host: '2001:db8::1',
      port: 8448,
      hostHeader: '[2001:db8::1]',
      tlsServerName: '2001:db8::1',
    });
    expect(await c.resolveServer('hs.test:99')).toEqual({
      host: 'hs.test',
      port: 99,
      hostHeader: 'hs.test:99',
      tlsServerName: 'hs.test',
    });
    expect(dns.queries).toEqual([]);
    expect((await failure(c.resolveServer('bad name'))).kind).toBe('dns');
  });

  it('talks to an IP literal server over TLS, checking the IP in the certificate', async () => {
    const hs = await homeserver(
      { [KEYS]: () => ({ json: { ip: true } }) },
      await makeCert(ca, { hostnames: [], ips: ['127.0.0.1'] }),
    );
    const c = client(null);
    expect(await c.getJson(`127.0.0.1:${hs.port}`, '/_matrix/key/v2/server', 1024)).toEqual({ ip: true });
    expect(hs.requests[0]?.headers.host).toBe(`127.0.0.1:${hs.port}`);
  });
});

describe('the IP guard on connections', () => {
  it('refuses a name resolving to a blocked address before connecting', async () => {
    const hs = await homeserver({ [KEYS]: () => ({ json: {} }) }, await makeCert(ca, { hostnames: ['hs.test'] }));
    const dns = await dnsServer({ A: { 'hs.test': ['127.0.0.1'] } });
    const c = client(dns, { whitelist: [] });
    const err = await failure(c.getJson(`hs.test:${hs.port}`, '/_matrix/key/v2/server', 1024));
    expect(err.kind).toBe('blocked');
    expect(err.message).toBe(
      `Unable to contact the Matrix homeserver hs.test:${hs.port}: hs.test resolves only to addresses not allowed for outbound requests (127.0.0.1)`,
    );
    expect(hs.connections).toBe(0);
  });

  it.each([['127.0.0.1'], ['[::ffff:127.0.0.1]']])('refuses the IP literal %s before connecting', async (ip) => {
    const hs = await homeserver({ [KEYS]: () => ({ json: {} }) }, await makeCert(ca, { hostnames: ['hs.test'] }));
    const c = client(null, { whitelist: [] });
    const err = await failure(c.getJson(`${ip}:${hs.port}`, '/_matrix/key/v2/server', 1024));
    expect(err.kind).toBe('blocked');
    expect(err.message).toMatch(/is not allowed for outbound requests$/);
    expect(hs.connections).toBe(0);
  });

  it('blocks the well-known lookup too, so nothing is contacted', async () => {
    const hs = await homeserver(
      { [WELL_KNOWN]: () => ({ json: { 'm.server': 'x.test:1' } }) },
      await makeCert(ca, { hostnames: ['hs.test'] }),
    );
    const dns = await dnsServer({ A: { 'hs.test': ['127.0.0.1'] } });
    const c = client(dns, { whitelist: [], wellKnownPort: hs.port });
    expect((await failure(c.getJson('hs.test', '/_matrix/key/v2/server', 1024))).kind).toBe('blocked');
    expect(hs.connections).toBe(0);
  });

  it('connects to a whitelisted address, skipping blocked ones, and reuses the connection', async () => {
    const hs = await homeserver({ [KEYS]: () => ({ json: { n: 1 } }) }, await makeCert(ca, { hostnames: ['hs.test'] }));
    const dns = await dnsServer({ A: { 'hs.test': ['10.0.0.1', '127.0.0.1'] } });
    const c = client(dns);
    expect(await c.getJson(`hs.test:${hs.port}`, '/_matrix/key/v2/server', 1024)).toEqual({ n: 1 });
    // undici marks the connection free a tick after the body ends; a request sent in the same tick opens another
    await new Promise((resolve) => setImmediate(resolve));
    expect(await c.getJson(`hs.test:${hs.port}`, '/_matrix/key/v2/server', 1024)).toEqual({ n: 1 });
    expect(hs.requests).toHaveLength(2);
    expect(hs.connections).toBe(1);
  });

  it('reports a name that does not exist', async () => {
    const dns = await dnsServer({});
    const err = await failure(client(dns).getJson('nowhere.test:8448', '/x', 10));
    expect(err.kind).toBe('dns');
    expect(err.message).toBe(
      'Unable to contact the Matrix homeserver nowhere.test:8448: the name nowhere.test does not resolve to any address',
    );
  });
});

describe('TLS', () => {
  async function setup(certFor: string) {
    const hs = await homeserver(
      { [KEYS]: () => ({ json: { tls: true } }) },
      await makeCert(ca, { hostnames: [certFor] }),
    );
    const dns = await dnsServer({ A: { 'hs.test': ['127.0.0.1'] } });
    return { hs, dns, name: `hs.test:${hs.port}` };
  }

  it('verifies the chain with the extra CA and the host name', async () => {
    const { dns, name } = await setup('hs.test');
    expect(await client(dns).getJson(name, '/_matrix/key/v2/server', 1024)).toEqual({ tls: true });
  });

  it('refuses a certificate from an unknown CA', async () => {
    const { dns, name } = await setup('hs.test');
    const err = await failure(client(dns, { caCert: undefined }).getJson(name, '/_matrix/key/v2/server', 1024));
    expect(err.kind).toBe('tls');
    expect(err.message).toMatch(
      new RegExp(
        `^Unable to contact the Matrix homeserver ${name}: TLS error: the certificate is not signed by a trusted authority`,
      ),
    );
  });

  it('accepts anything when verifycerts is off', async () => {
    const { dns, name } = await setup('another.test');
    expect(
      await client(dns, { caCert: undefined, verifyCerts: false }).getJson(name, '/_matrix/key/v2/server', 1024),
    ).toEqual({ tls: true });
  });

  it('refuses a certificate for another host name', async () => {
    const { dns, name } = await setup('another.test');
    const err = await failure(client(dns).getJson(name, '/_matrix/key/v2/server', 1024));
    expect(err.kind).toBe('tls');
    expect(err.message).toBe(
      `Unable to contact the Matrix homeserver ${name}: TLS error: the certificate is not valid for hs.test (ERR_TLS_CERT_ALTNAME_INVALID)`,
    );
  });
});

describe('requests', () => {
  it('sends JSON bodies and returns any status', async () => {
    const hs = await homeserver(
      {
        'POST /_matrix/federation/v1/3pid/onbind': (_req, body) => ({ json: { echo: JSON.parse(body) as unknown } }),
        'GET /missing': () => ({ status: 404, json: { errcode: 'M_NOT_FOUND', error: 'no' } }),
        'GET /text': () => ({ text: 'hello' }),
      },
      await makeCert(ca, { hostnames: ['hs.test'] }),
    );
    const dns = await dnsServer({ A: { 'hs.test': ['127.0.0.1'] } });
    const c = client(dns);
    const name = `hs.test:${hs.port}`;
    expect(await c.postJson(name, '/_matrix/federation/v1/3pid/onbind', { a: 1 }, 1024)).toEqual({ echo: { a: 1 } });
    expect(hs.requests[0]?.headers['content-type']).toBe('application/json');

    const res = await c.request(name, { method: 'GET', path: '/missing?access_token=secret', maxBodyBytes: 1024 });
    expect(res).toMatchObject({ status: 404, json: { errcode: 'M_NOT_FOUND', error: 'no' } });
    const err = await failure(c.getJson(name, '/missing?access_token=secret', 1024));
    expect(err).toMatchObject({ kind: 'http', status: 404, errcode: 'M_NOT_FOUND' });
    expect(err.message).toBe(`The Matrix homeserver ${name} answered GET /missing with HTTP 404 (M_NOT_FOUND)`);

    expect(await c.request(name, { method: 'GET', path: '/text', maxBodyBytes: 1024 })).toMatchObject({
      status: 200,
      json: undefined,
      text: 'hello',
    });
    const bad = await failure(c.getJson(name, '/text', 1024));
    expect(bad.kind).toBe('bad_json');
    expect(bad.message).toBe(`The Matrix homeserver ${name} returned invalid JSON`);
  });
});
