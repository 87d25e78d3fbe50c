import type { FastifyInstance } from 'fastify';
import fs from 'node:fs';
import type { AddressInfo } from 'node:net';
import { ActorSystem } from './actors/system.js';
import { systemClock, type Clock } from './clock.js';
import type { SydentConfig } from './config/types.js';
import { Readiness } from './health.js';
import { identityFromConfig } from './identity.js';
import { createClientApi } from './http/client-api.js';
import type { AppContext } from './http/context.js';
import type { HttpListener } from './http/http-listener.js';
import { createInternalApi } from './http/internal-api.js';
import { createListeners } from './http/listeners.js';
import { startReplicationListener } from './http/replication-api.js';
import type { Inspection } from './inspect/inspector.js';
import { loadReplicationTls } from './replication/tls.js';
import type { Logger } from './log.js';
import { createMetricsApi } from './http/metrics-api.js';
import type { Metrics } from './metrics/metrics.js';
import { isMemoryPath } from './store/database.js';
import { acquireInstanceLock } from './store/instance-lock.js';
import { loadPgEngine } from './store/pg/load.js';
import { describePgUrl, PgConnectError } from './store/pg/url.js';
import { StartupError } from './startup-error.js';
import { VERSION } from './version.js';
import { TermsSource } from './terms/terms.js';
import { settlesBy } from './util/settles-by.js';

interface StartOptions {
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
  /**
   * Stop: `/ready` answers 503 from now on; with `drain` (SIGTERM) the listeners keep serving for
   * `[http] drain_seconds` so load balancers notice; then stop accepting; requests under way get until
   * `[http] shutdown_timeout_seconds` from then, and are answered 503 if still running; the actors drain until that
   * same deadline and abandon what is left; the store closes the database last, whatever happened; the pid file is
   * removed. Ends within a second of the deadline. Safe to call twice (the first call's options hold).
   */
  close(opts?: { drain?: boolean }): Promise<void>;
}

/**
 * How long past the shutdown deadline the listeners may take to close (the answers written at the deadline leave,
 * then the connections are cut): the actors' stop follows, so that the whole stop ends within a second of it.
 */
const LISTENERS_GRACE_MS = 500;
/** How long requests given up by the actors at the deadline get to send their 503 through their route. */
const ABANDONED_ANSWER_MS = 100;

/**
 * Takes the instance lock, starts the actors (the store supervisor opens and migrates the database), then the
 * listeners: a running sydent-ts.
 */
export async function startServer(opts: StartOptions): Promise<RunningServer> {
  const { config, log } = opts;
  const clock = opts.clock ?? systemClock;
  const pidfilePath = opts.pidFile && config.general.pidfilePath ? config.general.pidfilePath : null;
  // Before anything touches the database or the pid file: a second instance stops here.
  // On PostgreSQL several nodes share the database: no file, no lock.
  const lock =
    config.db.engine === 'postgresql' || isMemoryPath(config.db.dbFile)
      ? null
      : acquireInstanceLock(config.db.dbFile, config.general.pidfilePath || undefined);

  const apps: FastifyInstance[] = [];
  /** the listeners' servers, stopped first (http/http-listener.ts) */
  const httpListeners: HttpListener[] = [];
  /** listeners that are not a plain fastify app (the replication listener) */
  const listeners: Array<{ close(until?: number): Promise<void> }> = [];
  let inspection: Inspection | null = null;
  let system: ActorSystem | null = null;
  let readiness: Readiness | null = null;
  let pidWritten = false;
  let closing: Promise<void> | null = null;
  const close = (closeOpts: { drain?: boolean } = {}) => (closing ??= shutdown(closeOpts.drain === true));
  /**
   * No new connections; requests under way get until `until`. Those still running then are given up by the actors
   * they wait on, which answers them 503 through their route (logged and counted as any answer); what still has no
   * answer a moment later is answered 503 by its listener. Then every connection is closed.
   */
  async function stopListeners(until: number): Promise<void> {
    for (const l of httpListeners) l.stopAccepting();
    await Promise.all(httpListeners.map((l) => l.settled(until)));
    if (httpListeners.some((l) => l.pending > 0)) {
      system?.abandon();
      const flushed = Date.now() + ABANDONED_ANSWER_MS;
      await Promise.all(httpListeners.map((l) => l.settled(flushed)));
    }
    await Promise.all(httpListeners.map((l) => l.close()));
    await Promise.allSettled([...listeners.map((l) => l.close(until)), ...apps.map((app) => app.close())]);
  }

  async function shutdown(drain: boolean): Promise<void> {
    readiness?.drain();
    const drainMs = drain ? config.http.drainSeconds * 1000 : 0;
    // One deadline for the rest, counted from the stop's start: requests under way may finish until then, the actors
    // drain until then, and what is left at that moment is answered 503 or abandoned. Each step is cut short at it,
    // so the stop ends soon after. (From the start, not from the drain's end: a drain timer that fires late on a
    // loaded machine shortens the rest instead of moving the deadline past the one main.ts holds the process to.)
    const until = Date.now() + drainMs + config.http.shutdownTimeoutMs;
    if (drainMs > 0) {
      log.info({ seconds: config.http.drainSeconds }, 'draining: /ready answers 503 until the listeners close');
      await new Promise((resolve) => setTimeout(resolve, drainMs));
    }
    if (httpListeners.length > 0)
      log.info(
        { seconds: config.http.shutdownTimeoutMs / 1000 },
        'stopping: no new connections; requests under way get until the deadline',
      );
    try {
      await settlesBy(stopListeners(until), until + LISTENERS_GRACE_MS);
      // The store supervisor closes the database, last, whatever the others still do (ActorSystem.stop never rejects).
      if (system) await system.stop({ until });
    } finally {
      await inspection?.stop();
      if (pidWritten && pidfilePath) removeOwnPidFile(pidfilePath);
      lock?.release();
    }
  }

  try {
    const terms = new TermsSource(config.general.termsPath, (err) =>
      log.error({ err }, 'terms file is invalid; keeping the last good terms'),
    );
    const identity = identityFromConfig(config);
    const { prometheusPort, prometheusAddr } = config.general;
    // As Sydent: metrics only when both the port and the address are set ("" binds every address). Without them
    // prom-client is never loaded and no request pays for counting.
    const metricsWanted = prometheusPort !== null && prometheusAddr !== null;
    const metrics: Metrics | undefined = metricsWanted
      ? new (await import('./metrics/metrics.js')).Metrics()
      : undefined;
    // Loaded only when asked for: the inspector's WebSocket stack is not start-up cost for everyone else.
    if (opts.inspectPort !== undefined) {
      const { startInspection } = await import('./inspect/inspector.js');
      const port = opts.inspectPort;
      inspection = await listening(INSPECTOR, '127.0.0.1', port, () => startInspection(port));
      log.info({ url: inspection.url }, 'inspector relay listening (loopback only)');
    }
    // As Sydent: no certificate (unset or unreadable), no replication listener; the replication supervisor says so.
    const replicationTls = loadReplicationTls(config);
    if (config.db.engine === 'postgresql') await preparePostgresql(config.db.url);
    system = ActorSystem.start({ config, clock, log, identity, metrics, replicationTls, inspect: inspection?.inspect });
    const { facades } = system;
    const reads = facades.reads;
    metrics?.watchStore(reads);
    readiness = new Readiness(reads, system, config.general.nodeName);
    const ctx: AppContext = { config, system, facades, clock, identity, reads, terms, log, metrics, readiness };

    const servers = createListeners(config.http, log, {
      internal: config.http.internalApi !== null,
      replication: replicationTls.ok,
      metrics: metrics !== undefined && prometheusPort !== null,
    });
    httpListeners.push(
      ...[servers.client, servers.internal, servers.replication, servers.metrics].filter((l) => l !== null),
    );

    const client = await createClientApi(ctx, log, servers.client);
    apps.push(client);
    const clientUrl = await listen(client, CLIENT, config.http.clientApi.bindAddress, config.http.clientApi.port);
    let internalUrl: string | null = null;
    if (config.http.internalApi && servers.internal) {
      const internal = await createInternalApi(ctx, log, servers.internal);
      apps.push(internal);
      internalUrl = await listen(internal, INTERNAL, config.http.internalApi.bindAddress, config.http.internalApi.port);
    }
    let replicationUrl: string | null = null;
    if (replicationTls.ok) {
      const { bindAddress, port } = config.http.replication;
      const replicationListener = servers.replication!;
      const listener = await listening(REPLICATION, bindAddress, port, () =>
        startReplicationListener(ctx, log, replicationTls.tls, config.http.replication, replicationListener),
      );
      listeners.push(listener);
      replicationUrl = listener.url;
    } else if (config.http.replication.certfile !== '') {
      log.warn({ reason: replicationTls.reason }, 'no replication listener');
    }
    let metricsUrl: string | null = null;
    if (metrics && prometheusPort !== null && servers.metrics) {
      const app = createMetricsApi(metrics, log, servers.metrics);
      apps.push(app);
      metricsUrl = await listen(app, METRICS, prometheusAddr || '0.0.0.0', prometheusPort);
    }
    log.info(
      {
        version: VERSION,
        config: config.configPath,
        db: config.db.engine === 'postgresql' ? `postgresql ${describePgUrl(config.db.url ?? '')}` : config.db.dbFile,
        clientUrl,
        internalUrl,
        metricsUrl,
        replicationUrl,
        inspectUrl: inspection?.url ?? null,
        serverName: config.general.serverName,
      },
      'sydent-ts started',
    );
    if (pidfilePath) {
      // With the lock held, a pid file already there is a crashed instance's: ours replaces it.
      fs.writeFileSync(pidfilePath, `${process.pid}\n`);
      pidWritten = true;
    }
    return { ctx, clientUrl, internalUrl, metricsUrl, replicationUrl, inspectUrl: inspection?.url ?? null, close };
  } catch (error) {
    await close();
    throw error;
  }
}

/** Removes the pid file only while it still names this process: never another instance's. */
function removeOwnPidFile(path: string): void {
  try {
    if (fs.readFileSync(path, 'utf8').trim() === String(process.pid)) fs.rmSync(path, { force: true });
  } catch {
    // already gone
  }
}

/** A listener as the operator knows it: its name and the settings that place it. */
interface ListenerName {
  what: string;
  keys: string;
}

const CLIENT: ListenerName = {
  what: 'client listener',
  keys: '[http] clientapi.http.bind_address, clientapi.http.port',
};
const INTERNAL: ListenerName = {
  what: 'internal listener',
  keys: '[http] internalapi.http.bind_address, internalapi.http.port',
};
const REPLICATION: ListenerName = {
  what: 'replication listener',
  keys: '[http] replication.https.bind_address, replication.https.port',
};
const METRICS: ListenerName = { what: 'metrics listener', keys: '[general] prometheus_addr, prometheus_port' };
const INSPECTOR: ListenerName = { what: 'inspector relay', keys: '--inspect=PORT' };

const LISTEN_PROBLEMS: Record<string, string> = {
  EADDRINUSE: 'the address is already in use (another process listens there)',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'no such address on this machine',
};

/** Runs `start`, turning the kernel's refusal to listen into one line that names the listener and its settings. */
async function listening<T>(name: ListenerName, host: string, port: number, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (error) {
    const problem = LISTEN_PROBLEMS[(error as NodeJS.ErrnoException).code ?? ''];
    if (!problem) throw error;
    const shown = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    throw new StartupError(`the ${name.what} cannot listen on ${shown}: ${problem}; see ${name.keys}`);
  }
}

async function listen(app: FastifyInstance, name: ListenerName, host: string, port: number): Promise<string> {
  await listening(name, host, port, () => app.listen({ host, port }));
  const address = app.server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${shown}:${address.port}`;
}

/**
 * Before the store supervisor makes its pool: the database answers, takes our login, and is migrated. What stops
 * start-up is said in one line.
 */
async function preparePostgresql(url: string | null): Promise<void> {
  if (!url) throw new StartupError('[db] db.engine = postgresql needs db.url (or SYDENT_DB_URL)');
  const engine = await loadPgEngine();
  try {
    await engine.preparePgDatabase(url);
  } catch (err) {
    if (err instanceof PgConnectError || err instanceof engine.PgSchemaVersionError)
      throw new StartupError(err.message);
    throw err;
  }
}
