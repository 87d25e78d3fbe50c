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
import type { StoreEngine, StoreWriteOps } from '../engine.js';
import { StoreHealth } from '../health.js';
import type { StoreReads } from '../reads.js';
import { StoreUnavailableError } from '../unavailable.js';
import { connectPg, describePgUrl } from './connect.js';
import { ensurePgPepper } from './hashing.js';
import { migratePg } from './migrations.js';
import { createPgPool } from './pool.js';
import { pgReads } from './reads.js';
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
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface PgStoreOptions {
  url: string;
  poolSize: number;
  log: Logger;
}

export class PgStore implements StoreEngine {
  readonly engine = 'postgresql';
  readonly reads: StoreReads;
  readonly writes: StoreWriteOps;
  private closing: Promise<void> | null = null;

  private constructor(
    private readonly pool: pg.Pool,
    log: Logger,
    url: string,
  ) {
    const tokens = new TokenCache();
    this.reads = pgReads(pool, tokens);
    this.writes = withHealth(pgWriteOps(pool, tokens), new StoreHealth(log, describePgUrl(url)));
  }

  /** The pool (no connection yet: preparePgDatabase checked the server). */
  static open(opts: PgStoreOptions): PgStore {
    return new PgStore(createPgPool(opts.url, opts.poolSize), opts.log, opts.url);
  }

  close(): Promise<void> {
    this.closing ??= this.pool.end().catch(() => undefined);
    return this.closing;
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
