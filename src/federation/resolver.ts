/**
 * DNS for federation. Operators (and tests) may point it at specific DNS servers (`[http] federation.dns_servers`);
 * otherwise the system resolver is used, so /etc/hosts and the local stub resolver keep working.
 */
import dns from 'node:dns';
import { FederationError } from './errors.js';

export interface SrvRecord {
  priority: number;
  weight: number;
  port: number;
  /** the target host name without a trailing dot; "." (or "") means "no service" */
  name: string;
}

export interface FederationResolver {
  /** [] when the name does not exist or has no SRV records */
  resolveSrv(name: string): Promise<SrvRecord[]>;
  /** IPv4 and IPv6 addresses of `host`; [] when it does not exist */
  resolveAddresses(host: string): Promise<string[]>;
}

export interface DnsResolverOptions {
  /** `ip`, `ip:port` or `[ipv6]:port`; empty = the system resolver */
  servers?: readonly string[];
  /** per-query timeout for the configured servers (c-ares); the system resolver has its own */
  queryTimeoutMs?: number;
}

// "no such name" and "no such record": an answer, not a failure
const NO_ANSWER = new Set(['ENOTFOUND', 'ENODATA', 'NOTFOUND', 'NODATA', 'EAI_NONAME', 'EAI_NODATA']);

export class DnsResolver implements FederationResolver {
  private readonly resolver: dns.promises.Resolver | null;

  constructor(opts: DnsResolverOptions = {}) {
    const servers = opts.servers ?? [];
    if (servers.length === 0) {
      this.resolver = null;
    } else {
      // tries: 2 so a lost UDP packet is retried once without stretching a failure over many seconds
      this.resolver = new dns.promises.Resolver({ timeout: opts.queryTimeoutMs ?? 2000, tries: 2 });
      this.resolver.setServers([...servers]);
    }
  }

  async resolveSrv(name: string): Promise<SrvRecord[]> {
    try {
      const records = this.resolver ? await this.resolver.resolveSrv(name) : await dns.promises.resolveSrv(name);
      return records.map((r) => ({
        priority: r.priority,
        weight: r.weight,
        port: r.port,
        name: r.name.replace(/\.$/, '') || '.',
      }));
    } catch (err) {
      if (NO_ANSWER.has(codeOf(err))) return [];
      throw dnsFailure(`SRV lookup for ${name} failed`, err);
    }
  }

  async resolveAddresses(host: string): Promise<string[]> {
    if (!this.resolver) {
      try {
        const found = await dns.promises.lookup(host, { all: true, verbatim: true });
        return found.map((a) => a.address);
      } catch (err) {
        if (NO_ANSWER.has(codeOf(err))) return [];
        throw dnsFailure(`looking up ${host} failed`, err);
      }
    }
    const resolver = this.resolver;
    const results = await Promise.allSettled([resolver.resolve4(host), resolver.resolve6(host)]);
    const addresses: string[] = [];
    let failure: unknown;
    for (const result of results) {
      if (result.status === 'fulfilled') addresses.push(...result.value);
      else if (!NO_ANSWER.has(codeOf(result.reason))) failure = result.reason;
    }
    // one family failing is fine when the other answered: an IPv4-only host with a broken AAAA server still works
    if (addresses.length === 0 && failure !== undefined) throw dnsFailure(`looking up ${host} failed`, failure);
    return addresses;
  }
}

function codeOf(err: unknown): string {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
}

function dnsFailure(what: string, err: unknown): FederationError {
  const code = codeOf(err);
  return new FederationError('dns', `${what} (${code || String(err)})`, { cause: err });
}
