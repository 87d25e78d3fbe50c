/** Talking to homeservers: discovery, the IP guard and the federation client. */
import { readFileSync } from 'node:fs';
import type { SydentConfig } from '../config/types.js';
import { FederationClient, type FederationClientOptions } from './client.js';
import { IpGuard } from './ip-guard.js';
import { DnsResolver } from './resolver.js';

export {
  FederationClient,
  DEFAULT_FEDERATION_TIMEOUT_MS,
  errcodeOf,
  type FederationClientOptions,
  type FederationRequest,
  type FederationResponse,
} from './client.js';
export {
  ServerDiscovery,
  WellKnownCache,
  pickSrvRecord,
  cachePeriodMs,
  DEFAULT_FEDERATION_PORT,
  WELL_KNOWN_MAX_SIZE,
  WELL_KNOWN_DEFAULT_CACHE_MS,
  WELL_KNOWN_MAX_CACHE_MS,
  WELL_KNOWN_INVALID_CACHE_MS,
  type DiscoveryOptions,
  type Fetch,
} from './discovery.js';
export { FederationError, type FederationErrorKind } from './errors.js';
export { IpGuard, DEFAULT_IP_RANGE_BLACKLIST, type IpGuardOptions } from './ip-guard.js';
export { fetchOpenIdUserId, OpenIdError, USERINFO_MAX_BYTES, type OpenIdErrorKind } from './openid.js';
export { DnsResolver, type DnsResolverOptions, type FederationResolver, type SrvRecord } from './resolver.js';
export {
  Transport,
  type ResolvedServer,
  type RawRequest,
  type RawResponse,
  type TransportOptions,
} from './transport.js';
export {
  parseXMatrixHeader,
  verifyHomeserverRequest,
  signedRequestObject,
  RequestAuthError,
  MISSING_AUTHORIZATION,
  MISSING_X_MATRIX,
  MALFORMED_AUTHORIZATION,
  INVALID_ORIGIN,
  NO_MATCHING_SIGNATURE,
  type RequestAuthErrorKind,
  type XMatrixAuth,
  type ServerKeySource,
  type HomeserverRequest,
} from './request-auth.js';
export {
  ServerKeyCache,
  parseKeyResponse,
  SERVER_KEYS_PATH,
  SERVER_KEYS_MAX_BYTES,
  SERVER_KEYS_MAX_CACHE_MS,
  SERVER_KEYS_MIN_REFETCH_MS,
  SERVER_KEYS_MAX_SERVERS,
  type FetchJson,
} from './server-keys.js';

/**
 * The client the server uses: `[general] ip.blacklist/ip.whitelist`, `[http] federation.verifycerts`,
 * `federation.dns_servers` and `federation.cacert`. `overrides` is for tests (timeouts, clocks, ports).
 */
export function createFederationClient(
  config: SydentConfig,
  overrides: Partial<FederationClientOptions> = {},
): FederationClient {
  const caPath = config.http.federationCaCert;
  return new FederationClient({
    ipGuard: new IpGuard({ blacklist: config.general.ipBlacklist, whitelist: config.general.ipWhitelist }),
    resolver: new DnsResolver({ servers: config.http.federationDnsServers }),
    verifyCerts: config.http.federationVerifyCerts,
    ...(caPath ? { caCert: readFileSync(caPath, 'utf8') } : {}),
    ...overrides,
  });
}
