/**
 * The PostgreSQL engine of the store (`[db] db.engine = postgresql`): a pool of `db.pool_size` connections to
 * `db.url`, the read facade (reads.ts) and the writes (writes.ts) on it. Any number of nodes may run on one
 * database.
 *
 * Opening is in two steps, because connecting is asynchronous and the store supervisor opens synchronously:
 * preparePgDatabase (before the actors start) connects once, says in one line why it cannot (bad URL, no server,
 * wrong password, no such database), migrates and makes sure there is a pepper, and closes that connection; the
 * store supervisor then makes the pool, which connects on demand and reconnects by itself.
 */
import type pg from 'pg';

import { lookupHash } from '../../crypto/index.js';
import type { Logger } from '../../log.js';
import { TokenCache } from '../accounts.js';
import type { StoreEngine, StoreSignal, StoreWriteOps } from '../engine.js';
import { StoreHealth } from '../health.js';
import type { StoreReads } from '../reads.js';
import { StoreUnavailableError } from '../unavailable.js';
import { connectPg, describePgUrl } from './connect.js';
import { PgCoordinator, type PgSignal } from './coordinator.js';
import { ensurePgPepper } from './hashing.js';
import { migratePg } from './migrations.js';
import { createPgPool } from './pool.js';
import { PepperCache, pgReads } from './reads.js';
import { ensureRateBuckets, PgRateBuckets } from './rate-buckets.js';
import { pgWriteOps } from './writes.js';

/**
 * Connects to `url`, migrates the schema and makes sure there is a lookup pepper. Rejects with PgConnectError (one
 * line, no password) when the database cannot be reached or logged into, PgSchemaVersionError when it is newer
 * than this code.
 */
export async function preparePgDatabase(url: string): Promise<void> {
  const client = await connectPg(url);
  try {
    await migratePg(client);
    await ensurePgPepper(client, lookupHash);
    await ensureRateBuckets(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface PgStoreOptions {
  url: string;
  poolSize: number;
  log: Logger;
  /** this node's name among those on the database (`[general] node_name`) */
  nodeName: string;
}

export class PgStore implements StoreEngine {
  readonly engine = 'postgresql';
  readonly reads: StoreReads;
  readonly writes: StoreWriteOps;
  private closing: Promise<void> | null = null;
  private readonly coordinator: PgCoordinator;
  private readonly listeners: ((signal: StoreSignal, destination?: string) => void)[] = [];

  private constructor(
    private readonly pool: pg.Pool,
    opts: PgStoreOptions,
  ) {
    const tokens = new TokenCache();
    const pepper = new PepperCache();
    this.reads = pgReads(pool, tokens, pepper);
    this.coordinator = new PgCoordinator(opts.url, opts.nodeName, opts.log, (signal, about) =>
      this.heard(signal, about, tokens, pepper),
    );
    const writes = pgWriteOps({ pool, tokens, buckets: new PgRateBuckets(pool), coordinator: this.coordinator });
    this.writes = withHealth(writes, new StoreHealth(opts.log, describePgUrl(opts.url)));
    this.coordinator.start();
  }

  /** The pool (no connection yet: preparePgDatabase checked the server) and the line to the other nodes. */
  static open(opts: PgStoreOptions): PgStore {
    return new PgStore(createPgPool(opts.url, opts.poolSize), opts);
  }

  onSignal(listener: (signal: StoreSignal, destination?: string) => void): void {
    this.listeners.push(listener);
  }

  /** The peers this node pushes to (the debug endpoint). */
  leases(): string[] {
    return this.coordinator.leases();
  }

  close(): Promise<void> {
    this.closing ??= Promise.all([this.coordinator.close(), this.pool.end().catch(() => undefined)]).then(
      () => undefined,
    );
    return this.closing;
  }

  /** Caches are this engine's own business; the workers' signals go to whoever listens. */
  private heard(signal: PgSignal, about: string | undefined, tokens: TokenCache, pepper: PepperCache): void {
    if (signal === 'accounts') tokens.clear();
    else if (signal === 'pepper') pepper.clear();
    else for (const listener of this.listeners) listener(signal, signal === 'callbacks' ? about : undefined);
  }
}

/** The operator hears once when writes start failing for an outside cause, and once when they work again. */
function withHealth(ops: StoreWriteOps, health: StoreHealth): StoreWriteOps {
  const out: Record<string, (e: unknown, q: unknown) => Promise<unknown>> = {};
  for (const [name, run] of Object.entries(ops) as [string, (e: unknown, q: unknown) => Promise<unknown>][]) {
    out[name] = async (e, q) => {
      try {
        const value = await run(e, q);
        health.ok();
        return value;
      } catch (error) {
        if (error instanceof StoreUnavailableError) health.failed(error.reason);
        throw error;
      }
    };
  }
  return out as unknown as StoreWriteOps;
}
export { PgSchemaVersionError } from './migrations.js';
