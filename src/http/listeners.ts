/**
 * The listeners of a server, each with its deadlines and its own connection budget: the client listener's from
 * `clientapi.http.max_connections(_per_address)`, the internal one's from `internalapi.http.max_connections`, the
 * replication and metrics listeners small fixed ones. Each budget is its own, so an attack that fills the client
 * listener leaves the others answering; together they stay under the process's file-descriptor limit
 * (http/descriptor-budget.ts).
 */
import proxyAddr from '@fastify/proxy-addr';
import type { HttpConfig } from '../config/types.js';
import type { Logger } from '../log.js';
import { StartupError } from '../startup-error.js';
import { DESCRIPTORS_KEPT, fitCaps, MIN_CLIENT_CONNECTIONS, openFileLimit } from './descriptor-budget.js';
import { HttpListener } from './http-listener.js';

/** Peers push one batch at a time each. */
const REPLICATION_MAX_CONNECTIONS = 64;
/** One Prometheus, or a few, scraping. */
const METRICS_MAX_CONNECTIONS = 16;

interface Listeners {
  client: HttpListener;
  internal: HttpListener | null;
  replication: HttpListener | null;
  metrics: HttpListener | null;
}

/** Which listeners run besides the client one. */
interface ListenersWanted {
  internal: boolean;
  replication: boolean;
  metrics: boolean;
}

/** Whose X-Forwarded-For the client listener believes; false: nobody's. */
export function clientTrustProxy(http: HttpConfig): string[] | false {
  return http.obeyXForwardedFor ? (http.trustedProxies.length ? http.trustedProxies : ['loopback']) : false;
}

export function createListeners(
  http: HttpConfig,
  log: Logger,
  wanted: ListenersWanted,
  fileLimit = openFileLimit(),
): Listeners {
  const caps = http.connectionCaps;
  const others: Record<string, number> = {};
  if (wanted.internal) others['internal'] = caps.internal;
  if (wanted.replication) others['replication'] = REPLICATION_MAX_CONNECTIONS;
  if (wanted.metrics) others['metrics'] = METRICS_MAX_CONNECTIONS;
  const fitted = fitCaps({ client: caps.client, clientPerAddress: caps.clientPerAddress, others }, fileLimit);
  if (fitted === null) {
    throw new StartupError(
      `the file-descriptor limit (${fileLimit}) leaves fewer than ${MIN_CLIENT_CONNECTIONS} connections for the client listener ` +
        `(${DESCRIPTORS_KEPT} are kept for the database, the log and outbound connections, ${JSON.stringify(others)} for the other listeners): ` +
        'raise it (ulimit -n, or LimitNOFILE= in the systemd unit)',
    );
  }
  if (fitted.lowered) {
    log.warn(
      {
        fileLimit,
        max_connections: { configured: fitted.lowered.client, used: fitted.client },
        max_connections_per_address: { configured: fitted.lowered.clientPerAddress, used: fitted.clientPerAddress },
      },
      '[http] clientapi.http.max_connections is lowered to fit the file-descriptor limit; raise the limit (ulimit -n, LimitNOFILE=) to keep it',
    );
  }
  const timeouts = http.requestTimeouts;
  const trust = clientTrustProxy(http);
  const trusted = trust ? proxyAddr.compile(trust) : null;
  const client = new HttpListener({
    name: 'client',
    log,
    timeouts,
    limits: {
      max: fitted.client,
      maxKey: '[http] clientapi.http.max_connections',
      perAddress: fitted.clientPerAddress,
      perAddressKey: '[http] clientapi.http.max_connections_per_address',
      ...(trusted ? { exempt: (address: string) => trusted(address, 0) } : {}),
    },
  });
  const listener = (name: string, max: number, maxKey: string | undefined, cors: boolean) =>
    new HttpListener({ name, log, timeouts, cors, limits: { max, ...(maxKey ? { maxKey } : {}) } });
  return {
    client,
    internal: wanted.internal
      ? listener('internal', caps.internal, '[http] internalapi.http.max_connections', false)
      : null,
    replication: wanted.replication ? listener('replication', REPLICATION_MAX_CONNECTIONS, undefined, true) : null,
    metrics: wanted.metrics ? listener('metrics', METRICS_MAX_CONNECTIONS, undefined, true) : null,
  };
}
