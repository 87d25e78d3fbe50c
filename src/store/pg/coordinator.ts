/**
 * A node's line to the other nodes on one PostgreSQL database: one connection of its own, outside the pool, on which
 *
 * - it LISTENs on `sydent_ts`: the writes NOTIFY (at their commit) what other nodes must act on: the replication log
 *   grew (`log`: the pusher of each peer looks), a homeserver callback was recorded (`callbacks`), an access token
 *   went or an account's consent changed (`accounts`: token caches are dropped), the lookup pepper changed (`pepper`);
 * - it holds the session-level advisory locks that say which node pushes to which peer (the replication leases).
 *
 * Why a session advisory lock rather than a lease row with an expiry: it needs no clock agreement between nodes nor
 * renewals, and it is released by PostgreSQL the moment the holder's connection ends, so a killed node (kill -9, a
 * crash: the kernel closes its socket) hands its peers over at once. A node that vanishes without closing its socket
 * (power cut, network partition) is found out by TCP keepalives (set below on both sides: about 30 s). When this
 * connection is lost the node holds no lease any more: it stops pushing, reconnects with backoff, and asks again; a
 * push already on its way may overlap the new holder's first one, which peers take as a duplicate (they ignore
 * associations they have).
 *
 * On every (re)connection the listeners are told every signal: whatever was notified while away is looked at.
 */
import { createHash } from 'node:crypto';

import pg from 'pg';

import type { Logger } from '../../log.js';
import type { PeerLease } from '../engine.js';
import { StoreUnavailableError } from '../unavailable.js';
import { pgClientConfig } from './connect.js';

export const CHANNEL = 'sydent_ts';

export type PgSignal = 'log' | 'callbacks' | 'accounts' | 'pepper';
const SIGNALS: readonly PgSignal[] = ['log', 'callbacks', 'accounts', 'pepper'];
const isSignal = (s: string | undefined): s is PgSignal => SIGNALS.includes(s as PgSignal);

/** Any fixed number, the same in every sydent-ts: the first key of every replication lease (the second: the peer's name, hashed). */
const LEASE_CLASS = 0x5359_5250; // "SYRP"
/** The first key of the locks that serialise one request across the nodes (the second: the request's key, hashed here). */
const REQUEST_CLASS = 0x5359_5251; // "SYRQ"
/** How often a node asks again for a request lock another node holds. */
const REQUEST_LOCK_POLL_MS = 10;

const CONNECT_TIMEOUT_MS = 5000;
const RECONNECT_MIN_MS = 250;
const RECONNECT_MAX_MS = 10_000;

/** The statement a write runs to tell the other nodes (delivered at its commit, once per transaction and signal). */
export const notifySql = (signal: PgSignal): string => `NOTIFY ${CHANNEL}, '${signal}'`;
/**
 * The same as an expression, for a write that tells the other nodes within one of its statements. `about`: an SQL
 * expression for what the signal is about (a callback's destination), sent after a space, so that a listener can
 * leave alone what it need not look at.
 */
export const notifyCall = (signal: PgSignal, about?: string): string =>
  about === undefined ? `pg_notify('${CHANNEL}', '${signal}')` : `pg_notify('${CHANNEL}', '${signal} ' || ${about})`;

/** Request locks to take and to give back on one connection, in one message. */
interface LockBatch {
  client: pg.Client;
  /** the lock ids to take, each with its taker's answer (whether it was taken; an error when the connection failed) */
  takes: Array<{ id: number; resolve: (taken: boolean) => void; reject: (error: unknown) => void }>;
  /** the lock ids to give back: before the takes, so a lock given back and asked for in one batch goes to the taker */
  gives: number[];
  /** settles once the batch was sent and answered (never rejects: a lock lost with its connection is gone) */
  sent: Promise<void>;
}

/** Sends `batch` (the ids are 32-bit integers, written in) and answers each taker. */
async function sendLockBatch(batch: LockBatch): Promise<void> {
  const { client, takes, gives } = batch;
  const statements: string[] = [];
  if (gives.length)
    statements.push(
      `SELECT pg_advisory_unlock(${REQUEST_CLASS}, k) FROM unnest(ARRAY[${gives.join(', ')}]::int[]) AS k`,
    );
  if (takes.length)
    statements.push(
      `SELECT i, pg_try_advisory_lock(${REQUEST_CLASS}, k) AS taken ` +
        `FROM unnest(ARRAY[${takes.map((t) => t.id).join(', ')}]::int[]) WITH ORDINALITY AS u (k, i) ORDER BY i`,
    );
  try {
    const result = (await client.query(statements.join(';\n'))) as pg.QueryResult | pg.QueryResult[];
    const rows = takes.length ? (Array.isArray(result) ? result[result.length - 1]! : result).rows : [];
    takes.forEach((t, i) => t.resolve((rows[i] as { taken?: unknown } | undefined)?.taken === true));
  } catch (error) {
    for (const t of takes) t.reject(error);
  }
}

export class PgCoordinator {
  private client: pg.Client | null = null;
  private connecting: Promise<pg.Client | null> | null = null;
  private readonly held = new Set<string>();
  /** the request locks this node holds, and on which connection */
  private readonly keys = new Map<string, { id: number; client: pg.Client }>();
  /** the last query sent on `client`: the next one waits for it (see `send`) */
  private tail: Promise<unknown> = Promise.resolve();
  /** the request locks to be taken and given back with the next query (see `lockBatchOf`) */
  private lockBatch: LockBatch | null = null;
  private retryMs = RECONNECT_MIN_MS;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private lostLogged = false;

  constructor(
    private readonly url: string,
    private readonly nodeName: string,
    private readonly log: Logger,
    private readonly onSignal: (signal: PgSignal, about?: string) => void,
  ) {}

  /** Connects in the background; reconnects by itself whenever the connection is lost. */
  start(): void {
    void this.connection();
  }

  /** The peers this node pushes to right now. */
  leases(): string[] {
    return [...this.held].sort();
  }

  /** Whether this node pushes to `name`; takes the lease when nobody holds it. */
  async tryLease(name: string): Promise<PeerLease> {
    const client = await this.connection();
    if (!client) return 'elsewhere';
    try {
      if (this.held.has(name)) {
        // The session (and so the lock) is still there: a push never starts on a lease lost a moment ago.
        await this.send(client, 'SELECT 1');
        return this.held.has(name) ? 'held' : 'elsewhere';
      }
      const res = await this.send<{ ok: boolean }>(client, 'SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok', [
        LEASE_CLASS,
        name,
      ]);
      if (!res.rows[0]?.ok || this.client !== client) return 'elsewhere';
      this.held.add(name);
      this.log.info({ peer: name, node: this.nodeName }, 'replication: this node now pushes to the peer');
      return 'acquired';
    } catch {
      // the connection is gone: its leases with it (`lost`); the next push asks again
      this.lost(client);
      return 'elsewhere';
    }
  }

  /**
   * Waits (until `deadline`) for the lock of `key`, which one node at a time holds: requests for one session sent
   * to several nodes at once take their turns, as they do within one node. Answers whether it was taken; the lock
   * goes with the connection if this node dies or loses it. `key` is hashed here: it may hold a client secret.
   */
  async holdKey(key: string, deadline: number): Promise<boolean> {
    const id = createHash('sha256').update(key).digest().readInt32BE(0);
    for (;;) {
      const client = await this.connection();
      // The database cannot be reached: the request fails now, as its writes would.
      if (!client) throw new StoreUnavailableError('unreachable');
      try {
        const batch = this.lockBatchOf(client);
        const taken = await new Promise<boolean>((resolve, reject) => batch.takes.push({ id, resolve, reject }));
        if (taken) {
          this.keys.set(key, { id, client });
          return true;
        }
      } catch {
        this.lost(client);
      }
      if (Date.now() + REQUEST_LOCK_POLL_MS >= deadline || this.closed) return false;
      await new Promise((resolve) => setTimeout(resolve, REQUEST_LOCK_POLL_MS));
    }
  }

  /** Gives back the lock of `key` (a lock lost with its connection is gone already). */
  async releaseKey(key: string): Promise<void> {
    const held = this.keys.get(key);
    if (!held) return;
    this.keys.delete(key);
    if (held.client !== this.client) return;
    const batch = this.lockBatchOf(held.client);
    batch.gives.push(held.id);
    await batch.sent;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const client = this.client;
    this.client = null;
    this.held.clear();
    await client?.end().catch(() => undefined);
  }

  /**
   * A query on the connection, once the one sent before it has ended. Requests ask for their locks concurrently, and
   * a client takes one query at a time: pg 8 queues the others itself but warns of it (on stderr), and pg 9 refuses.
   */
  private send<R extends pg.QueryResultRow>(
    client: pg.Client,
    text: string,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>> {
    return this.after(() => client.query<R>(text, values));
  }

  /** Runs `work` once the query sent before it has ended. */
  private after<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * The batch of request locks that goes next on `client`: the takes and gives asked for until it is sent (when the
   * query before it ends) go together in one message, so that under load a request's two locks cost a share of a
   * round trip each, not one each on this one connection.
   */
  private lockBatchOf(client: pg.Client): LockBatch {
    if (this.lockBatch?.client === client) return this.lockBatch;
    const batch: LockBatch = { client, takes: [], gives: [], sent: Promise.resolve() };
    this.lockBatch = batch;
    batch.sent = this.after(() => {
      if (this.lockBatch === batch) this.lockBatch = null;
      return sendLockBatch(batch);
    });
    return batch;
  }

  private connection(): Promise<pg.Client | null> {
    if (this.client) return Promise.resolve(this.client);
    if (this.closed) return Promise.resolve(null);
    this.connecting ??= this.connect().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private async connect(): Promise<pg.Client | null> {
    const client = new pg.Client({
      ...pgClientConfig(this.url, { timeoutMs: CONNECT_TIMEOUT_MS }),
      application_name: `sydent-ts ${this.nodeName}`.slice(0, 63),
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    client.on('error', () => undefined);
    client.on('end', () => this.lost(client));
    client.on('notification', (n) => {
      if (n.channel !== CHANNEL || n.payload === undefined) return;
      const space = n.payload.indexOf(' ');
      const signal = space === -1 ? n.payload : n.payload.slice(0, space);
      if (isSignal(signal)) this.onSignal(signal, space === -1 ? undefined : n.payload.slice(space + 1));
    });
    try {
      await client.connect();
      // The server's side of the keepalives: the locks of a node that vanished without a word are released.
      await client.query('SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3');
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (err) {
      await client.end().catch(() => undefined);
      this.scheduleReconnect(err);
      return null;
    }
    if (this.closed) {
      await client.end().catch(() => undefined);
      return null;
    }
    this.client = client;
    this.tail = Promise.resolve();
    this.retryMs = RECONNECT_MIN_MS;
    if (this.lostLogged) this.log.info({ node: this.nodeName }, 'database: the node listens to the other nodes again');
    this.lostLogged = false;
    for (const signal of SIGNALS) this.onSignal(signal);
    return client;
  }

  private lost(client: pg.Client): void {
    if (this.client !== client) return;
    this.client = null;
    const leases = this.leases();
    this.held.clear();
    if (this.closed) return;
    this.scheduleReconnect(null, leases);
  }

  private scheduleReconnect(err: unknown, leases: string[] = []): void {
    if (this.closed || this.timer) return;
    if (!this.lostLogged) {
      this.lostLogged = true;
      this.log.warn(
        { node: this.nodeName, leases, err: err instanceof Error ? err.message : undefined },
        'database: lost the connection that hears the other nodes and holds the replication leases; reconnecting',
      );
    }
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RECONNECT_MAX_MS);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.connection();
    }, delay);
    this.timer.unref();
  }
}
