/**
 * Server-server discovery: from a Matrix server name to the TCP target, Host header and TLS name, following the
 * spec's steps in the order Sydent's MatrixFederationAgent takes them (IP literal, explicit port, .well-known,
 * SRV `_matrix-fed._tcp` then `_matrix._tcp`, port 8448).
 */
import { FederationError } from './errors.js';
import type { FederationResolver, SrvRecord } from './resolver.js';
import { parseServerName, type ParsedServerName } from '../matrix/server-name.js';
import type { RawRequest, RawResponse, ResolvedServer } from './transport.js';

export type { ResolvedServer } from './transport.js';

/** one guarded HTTP exchange (the federation transport); the .well-known fetch must not bypass the IP guard */
export type Fetch = (target: ResolvedServer, req: RawRequest) => Promise<RawResponse>;

export const DEFAULT_FEDERATION_PORT = 8448;
export const WELL_KNOWN_MAX_SIZE = 50 * 1024;
const WELL_KNOWN_PATH = '/.well-known/matrix/server';
const WELL_KNOWN_MAX_REDIRECTS = 5;
const HOUR_MS = 3600 * 1000;
export const WELL_KNOWN_DEFAULT_CACHE_MS = 24 * HOUR_MS;
export const WELL_KNOWN_MAX_CACHE_MS = 48 * HOUR_MS;
export const WELL_KNOWN_INVALID_CACHE_MS = HOUR_MS;
// spreads the expiry of entries fetched together, so they are not all refetched in the same second
const CACHE_JITTER_MS = 10 * 60 * 1000;

/** `.well-known` results per host name: the delegated server name, or null for "none / invalid" */
export class WellKnownCache {
  private readonly entries = new Map<string, { delegated: string | null; expiresAt: number }>();
  readonly now: () => number;

  constructor(opts: { now?: () => number } = {}) {
    this.now = opts.now ?? Date.now;
  }

  /** undefined when there is no live entry */
  get(host: string): string | null | undefined {
    const entry = this.entries.get(host);
    if (!entry) return undefined;
    if (entry.expiresAt <= this.now()) {
      this.entries.delete(host);
      return undefined;
    }
    return entry.delegated;
  }

  set(host: string, delegated: string | null, ttlMs: number): void {
    if (ttlMs <= 0) return;
    this.entries.set(host, { delegated, expiresAt: this.now() + ttlMs });
  }
}

export interface DiscoveryOptions {
  resolver: FederationResolver;
  fetch: Fetch;
  /** 'http' only for tests that run homeservers without TLS */
  scheme?: 'https' | 'http';
  cache?: WellKnownCache;
  /** for picking among SRV records of equal priority, and the cache jitter */
  random?: () => number;
  /**
   * The port `.well-known` is fetched from (443). Only tests change it, because they cannot all bind 443; the
   * Host header and TLS name stay those of a port-443 request.
   */
  wellKnownPort?: number;
}

export class ServerDiscovery {
  readonly cache: WellKnownCache;
  private readonly random: () => number;
  private readonly wellKnownPort: number;
  private readonly scheme: 'https' | 'http';
  // concurrent requests to one new server share a single .well-known fetch
  private readonly inFlight = new Map<string, Promise<string | null>>();

  constructor(private readonly opts: DiscoveryOptions) {
    this.cache = opts.cache ?? new WellKnownCache();
    this.random = opts.random ?? Math.random;
    this.scheme = opts.scheme ?? 'https';
    this.wellKnownPort = opts.wellKnownPort ?? (this.scheme === 'https' ? 443 : 80);
  }

  async resolveServer(serverName: string): Promise<ResolvedServer> {
    const parsed = parseServerName(serverName);
    if (!parsed) throw new FederationError('dns', `"${serverName}" is not a valid server name`);
    const direct = directTarget(parsed, serverName);
    if (direct) return direct;

    const delegated = await this.wellKnown(parsed.host);
    if (delegated !== null) {
      // the delegated name is used as is: no second .well-known lookup
      const target = parseServerName(delegated);
      if (target) return directTarget(target, delegated) ?? (await this.srvOrDefault(target.host, delegated));
    }
    return this.srvOrDefault(parsed.host, serverName);
  }

  /** the delegated `m.server` of `host`, or null; cached, failures included */
  async wellKnown(host: string): Promise<string | null> {
    const cached = this.cache.get(host);
    if (cached !== undefined) return cached;
    let pending = this.inFlight.get(host);
    if (!pending) {
      pending = this.fetchWellKnown(host).finally(() => this.inFlight.delete(host));
      this.inFlight.set(host, pending);
    }
    return pending;
  }

  private async fetchWellKnown(host: string): Promise<string | null> {
    let res: RawResponse | null;
    try {
      res = await this.getFollowingRedirects(host);
    } catch {
      res = null; // unreachable, blocked, TLS failure, too large: all mean "no delegation"
    }
    const delegated = res ? delegationOf(res) : null;
    if (delegated === null) {
      this.cache.set(host, null, WELL_KNOWN_INVALID_CACHE_MS + this.jitter());
      return null;
    }
    const period = cachePeriodMs(res?.headers ?? {}, this.cache.now());
    this.cache.set(
      host,
      delegated,
      period === null ? WELL_KNOWN_DEFAULT_CACHE_MS + this.jitter() : Math.min(period, WELL_KNOWN_MAX_CACHE_MS),
    );
    return delegated;
  }

  private async getFollowingRedirects(host: string): Promise<RawResponse | null> {
    let url = new URL(`${this.scheme}://${host}:${this.wellKnownPort}${WELL_KNOWN_PATH}`);
    let target: ResolvedServer = { host, port: this.wellKnownPort, hostHeader: host, tlsServerName: host };
    for (let hop = 0; ; hop++) {
      const res = await this.opts.fetch(target, {
        method: 'GET',
        path: url.pathname + url.search,
        headers: { accept: 'application/json' },
        maxBodyBytes: WELL_KNOWN_MAX_SIZE,
      });
      const location = headerValue(res.headers, 'location');
      if (!REDIRECTS.has(res.status) || location === undefined) return res;
      if (hop >= WELL_KNOWN_MAX_REDIRECTS) return null;
      url = new URL(location, url);
      // a redirect may not downgrade to plain HTTP
      if (url.protocol !== `${this.scheme}:`) return null;
      const hostname = url.hostname.replace(/^\[(.*)\]$/, '$1');
      target = {
        host: hostname,
        port: url.port === '' ? (this.scheme === 'https' ? 443 : 80) : Number(url.port),
        hostHeader: url.host,
        tlsServerName: hostname,
      };
    }
  }

  /** SRV on `host`, else host:8448; `hostHeader` is the name we were asked for (or the delegated one) */
  private async srvOrDefault(host: string, hostHeader: string): Promise<ResolvedServer> {
    const record = await this.pickSrv(host);
    if (record) return { host: record.name, port: record.port, hostHeader, tlsServerName: host };
    return { host, port: DEFAULT_FEDERATION_PORT, hostHeader, tlsServerName: host };
  }

  private async pickSrv(host: string): Promise<SrvRecord | null> {
    // _matrix-fed (MSC4040) is the current name; _matrix is still what most deployments publish
    for (const service of [`_matrix-fed._tcp.${host}`, `_matrix._tcp.${host}`]) {
      let records = await this.opts.resolver.resolveSrv(service);
      if (records.length === 0) continue;
      // RFC 2782: a lone record with target "." says the service is deliberately not offered
      if (records.length === 1 && records[0]?.name === '.') {
        throw new FederationError('dns', `the SRV record ${service} says the service is unavailable`);
      }
      records = records.filter((r) => r.name !== '.');
      if (records.length > 0) return pickSrvRecord(records, this.random);
    }
    return null;
  }

  private jitter(): number {
    return Math.floor(this.random() * CACHE_JITTER_MS);
  }
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/** IP literal → it, on its port or 8448; explicit port → host:port; otherwise null (discovery continues) */
function directTarget(parsed: ParsedServerName, name: string): ResolvedServer | null {
  if (parsed.ipLiteral) {
    return {
      host: parsed.host,
      port: parsed.port ?? DEFAULT_FEDERATION_PORT,
      hostHeader: name,
      tlsServerName: parsed.host,
    };
  }
  if (parsed.port !== null)
    return { host: parsed.host, port: parsed.port, hostHeader: name, tlsServerName: parsed.host };
  return null;
}

/** Sydent's (and Twisted's) choice: the lowest priority, then weighted random with randint(0, total weight) */
export function pickSrvRecord(records: readonly SrvRecord[], random: () => number = Math.random): SrvRecord {
  const lowest = Math.min(...records.map((r) => r.priority));
  const group = records.filter((r) => r.priority === lowest);
  const total = group.reduce((sum, r) => sum + r.weight, 0);
  let target = Math.floor(random() * (total + 1));
  for (const record of group) {
    target -= record.weight;
    if (target <= 0) return record;
  }
  return group[group.length - 1] as SrvRecord;
}

/** the `m.server` of a valid response: status 200, a JSON object, a string `m.server` that is a server name */
function delegationOf(res: RawResponse): string | null {
  if (res.status !== 200) return null;
  let body: unknown;
  try {
    body = JSON.parse(res.body.toString('utf8'));
  } catch {
    return null;
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return null;
  const server = (body as Record<string, unknown>)['m.server'];
  // an unparsable m.server counts as an invalid response (the spec: "skip to" the SRV step)
  return typeof server === 'string' && parseServerName(server) !== null ? server : null;
}

/**
 * Synapse's _cache_period_from_headers: `no-store` → 0, `max-age`, else `Expires` (unparsable → 0), else null
 * (no caching headers: the caller uses the default period).
 */
export function cachePeriodMs(headers: Record<string, string | string[] | undefined>, nowMs: number): number | null {
  const directives = new Map<string, string>();
  for (const part of (headerValues(headers, 'cache-control') ?? []).join(',').split(',')) {
    const [name = '', value = ''] = part.split('=', 2).map((s) => s.trim());
    if (name !== '') directives.set(name.toLowerCase(), value.replace(/^"(.*)"$/, '$1'));
  }
  if (directives.has('no-store')) return 0;
  const maxAge = directives.get('max-age');
  if (maxAge !== undefined && /^\d+$/.test(maxAge)) return Number(maxAge) * 1000;
  const expires = headerValues(headers, 'expires');
  if (expires !== undefined) {
    const at = Date.parse(expires[expires.length - 1] ?? '');
    return Number.isNaN(at) ? 0 : Math.max(0, at - nowMs);
  }
  return null;
}

function headerValues(headers: Record<string, string | string[] | undefined>, name: string): string[] | undefined {
  const value = headers[name];
  if (value === undefined) return undefined;
  return Array.isArray(value) ? value : [value];
}

function headerValue(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const values = headerValues(headers, name);
  return values?.[values.length - 1];
}
