import type { FastifyInstance } from 'fastify';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { ActorSystem } from './actors/system.js';
import { systemClock, type Clock } from './clock.js';
import type { SydentConfig } from './config/types.js';
import { lookupHash } from './crypto/index.js';
import { identityFromConfig } from './identity.js';
import { createClientApi } from './http/client-api.js';
import type { AppContext } from './http/context.js';
import { createInternalApi } from './http/internal-api.js';
import { startReplicationListener } from './http/replication-api.js';
import { loadReplicationTls } from './replication/tls.js';
import type { Logger } from './log.js';
import { createMetricsApi } from './http/metrics-api.js';
import type { Metrics } from './metrics/metrics.js';
import { closeDatabase, isMemoryPath, openDatabase } from './store/database.js';
import { readableByOthersWarning } from './util/private-file.js';
import { ensurePepper } from './store/hashing.js';
import { createReads } from './store/index.js';
import { openLookupConnection, ReadSnapshot } from './store/lookup-connection.js';
import { TermsSource } from './terms/terms.js';

export interface StartOptions {
  config: SydentConfig;
  log: Logger;
  clock?: Clock;
  /** write and later remove `general.pidfile.path` (the command line does; in-process tests don't) */
  pidFile?: boolean;
  /** `--inspect[=PORT]`: the loopback WebSocket port for Stately's inspector (0 picks a free one) */
  inspectPort?: number;
}

export interface RunningServer {
  ctx: AppContext;
  clientUrl: string;
  internalUrl: string | null;
  metricsUrl: string | null;
  /** the replication listener (mutual TLS), when `replication.https.certfile` is set and readable */
  replicationUrl: string | null;
  /** the inspector relay (`ws://127.0.0.1:PORT`) when started with inspectPort */
  inspectUrl: string | null;
  /** stop accepting, drain the actors, close the database, remove the pid file; safe to call twice */
  close(): Promise<void>;
}

/** Opens the store, starts the actors, then the listeners: a running sydent-ts. */
export async function startServer(opts: StartOptions): Promise<RunningServer> {
  const { config, log } = opts;
  const clock = opts.clock ?? systemClock;
  const terms = new TermsSource(config.general.termsPath, (err) => log.error({ err }, 'terms file is invalid; keeping the last good terms'));
  const db = openDatabase(config.db.dbFile);
  if (!isMemoryPath(config.db.dbFile)) {
    const warning = readableByOthersWarning(config.db.dbFile, 'the lookup pepper, access tokens and 3PID addresses');
    if (warning) log.warn(`database: ${warning}`);
  }
  ensurePepper(db, lookupHash);
  const identity = identityFromConfig(config);
  // Lookups read on a connection of their own, sharing short read snapshots (store/lookup-connection.ts).
  const lookupDb = openLookupConnection(config.db.dbFile);
  const lookups = lookupDb ? { db: lookupDb, snapshot: new ReadSnapshot(lookupDb) } : undefined;
  const reads = createReads(db, lookups);
  const { prometheusPort, prometheusAddr } = config.general;
  // As Sydent: metrics only when both the port and the address are set ("" binds every address). Without them
  // prom-client is never loaded and no request pays for counting.
  const metricsWanted = prometheusPort !== null && prometheusAddr !== null;
  const metrics: Metrics | undefined = metricsWanted ? new (await import('./metrics/metrics.js')).Metrics(reads) : undefined;
  // Loaded only when asked for: the inspector's WebSocket stack is not start-up cost for everyone else.
  const inspection =
    opts.inspectPort === undefined ? null : await (await import('./inspect/inspector.js')).startInspection(opts.inspectPort);
  if (inspection) log.info({ url: inspection.url }, 'inspector relay listening (loopback only)');
  const system = ActorSystem.start({ config, db, clock, log, identity, lookupSnapshot: lookups?.snapshot, metrics, inspect: inspection?.inspect });
  const ctx: AppContext = { config, system, clock, identity, reads, terms, log, metrics };

  const apps: FastifyInstance[] = [];
  /** listeners that are not a plain fastify app (the replication listener) */
  const listeners: Array<{ close(): Promise<void> }> = [];
  let closing: Promise<void> | null = null;
  const close = () => (closing ??= shutdown());
  async function shutdown(): Promise<void> {
    await Promise.allSettled([...apps.map((app) => app.close()), ...listeners.map((l) => l.close())]);
    await system.stop();
    // After the listeners (no more lookups) and the store (no more writes to end its snapshot).
    if (lookupDb) closeDatabase(lookupDb);
    await inspection?.stop();
    if (opts.pidFile && config.general.pidfilePath) fs.rmSync(config.general.pidfilePath, { force: true });
  }

  try {
    const client = await createClientApi(ctx, log);
    apps.push(client);
    const clientUrl = await listen(client, config.http.clientApi.bindAddress, config.http.clientApi.port);
    let internalUrl: string | null = null;
    if (config.http.internalApi) {
      const internal = await createInternalApi(ctx, log);
      apps.push(internal);
      internalUrl = await listen(internal, config.http.internalApi.bindAddress, config.http.internalApi.port);
    }
    let replicationUrl: string | null = null;
    // As Sydent: no certificate (unset or unreadable), no replication listener; the replication supervisor says so.
    const replicationTls = loadReplicationTls(config);
    if (replicationTls.ok) {
      const listener = await startReplicationListener(ctx, log, replicationTls.tls, config.http.replication);
      listeners.push(listener);
      replicationUrl = listener.url;
    } else if (config.http.replication.certfile !== '') {
      log.warn({ reason: replicationTls.reason }, 'no replication listener');
    }
    let metricsUrl: string | null = null;
    if (metrics && prometheusPort !== null) {
      const app = createMetricsApi(metrics, log);
      apps.push(app);
      metricsUrl = await listen(app, prometheusAddr || '0.0.0.0', prometheusPort);
    }
    log.info({ clientUrl, internalUrl, metricsUrl, replicationUrl, serverName: config.general.serverName }, 'sydent-ts started');
    if (opts.pidFile && config.general.pidfilePath) {
      fs.writeFileSync(config.general.pidfilePath, `${process.pid}\n`);
    }
    return { ctx, clientUrl, internalUrl, metricsUrl, replicationUrl, inspectUrl: inspection?.url ?? null, close };
  } catch (error) {
    await close();
    throw error;
  }
}

async function listen(app: FastifyInstance, host: string, port: number): Promise<string> {
  await app.listen({ host, port });
  const address = app.server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${shown}:${address.port}`;
}
