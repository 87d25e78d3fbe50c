/**
 * The rate limits' buckets on PostgreSQL, shared by every node on the database: a limit holds however the load
 * balancer spreads the requests. Each take is one atomic statement (INSERT … ON CONFLICT DO UPDATE … RETURNING):
 * the row's lock orders concurrent takes of one key from any node, and each sees the bucket the previous one left.
 *
 * The buckets are working state, not data: an UNLOGGED table (a crash of the database server empties it, as a
 * restart empties a single node's buckets), made by every node at start-up rather than by a numbered migration (a
 * sydent.db has no such table: SQLite keeps its buckets in memory), and left out by migrate-db. Keys are stored
 * hashed: the table never holds an address or a client's IP.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';

import type { Admission } from '../../util/rate-limiter.js';
import { query } from './pool.js';
import { RATE_BUCKETS_TABLE } from './schema.js';

export { RATE_BUCKETS_TABLE };

/** Any fixed number, the same in every sydent-ts: nodes starting at once make the table one after the other. */
const CREATE_LOCK = 0x5359_5242; // "SYRB"

/** Made at start-up (preparePgDatabase); a no-op when another node made it. */
export async function ensureRateBuckets(client: pg.ClientBase): Promise<void> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [CREATE_LOCK]);
    await client.query(
      `CREATE UNLOGGED TABLE IF NOT EXISTS ${RATE_BUCKETS_TABLE} (
         bucket text COLLATE "C" NOT NULL,
         key text COLLATE "C" NOT NULL,
         tokens double precision NOT NULL,
         at bigint NOT NULL,
         admitted boolean NOT NULL,
         PRIMARY KEY (bucket, key)
       )`,
    );
    await client.query(`CREATE INDEX IF NOT EXISTS ${RATE_BUCKETS_TABLE}_at ON ${RATE_BUCKETS_TABLE} (bucket, at)`);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

const keyOf = (key: string): string => createHash('sha256').update(key).digest('base64url');

/** The bucket refilled since it was last touched, as the in-memory RateLimiter computes it. */
const REFILLED = 'least($3::float8, b.tokens + greatest(0, $4::bigint - b.at) / 1000.0 * $5::float8)';

const TAKE_SQL = `
  INSERT INTO ${RATE_BUCKETS_TABLE} AS b (bucket, key, tokens, at, admitted)
  VALUES ($1, $2, CASE WHEN $3::float8 >= 1 THEN $3::float8 - 1 ELSE $3::float8 END, $4, $3::float8 >= 1)
  ON CONFLICT (bucket, key) DO UPDATE SET
    tokens = ${REFILLED} - CASE WHEN ${REFILLED} >= 1 THEN 1 ELSE 0 END,
    admitted = ${REFILLED} >= 1,
    at = greatest(b.at, $4::bigint)
  RETURNING tokens, admitted`;

/** Forgets a bucket once it has filled up again: the table follows the active keys only. */
const PRUNE_EVERY_MS = 60_000;

export class PgRateBuckets {
  private readonly prunedAt = new Map<string, number>();

  constructor(private readonly pool: pg.Pool) {}

  async take(e: { bucket: string; key: string; burst: number; rateHz: number; now: number }): Promise<Admission> {
    await this.prune(e.bucket, e.burst, e.rateHz, e.now);
    const res = await query<{ tokens: number; admitted: boolean }>(this.pool, {
      name: 'rate_take',
      text: TAKE_SQL,
      values: [e.bucket, keyOf(e.key), e.burst, e.now, e.rateHz],
    });
    const { tokens, admitted } = res.rows[0]!;
    return admitted ? { ok: true } : { ok: false, retryAfterMs: Math.ceil(((1 - tokens) / e.rateHz) * 1000) };
  }

  async refund(e: { bucket: string; key: string; burst: number }): Promise<void> {
    await query(this.pool, {
      name: 'rate_refund',
      text: `UPDATE ${RATE_BUCKETS_TABLE} SET tokens = least($3::float8, tokens + 1) WHERE bucket = $1 AND key = $2`,
      values: [e.bucket, keyOf(e.key), e.burst],
    });
  }

  private async prune(bucket: string, burst: number, rateHz: number, now: number): Promise<void> {
    const last = this.prunedAt.get(bucket) ?? 0;
    if (now - last < PRUNE_EVERY_MS) return;
    this.prunedAt.set(bucket, now);
    const fullAfterMs = Math.ceil((burst / rateHz) * 1000);
    await query(this.pool, {
      name: 'rate_prune',
      text: `DELETE FROM ${RATE_BUCKETS_TABLE} WHERE bucket = $1 AND at < $2`,
      values: [bucket, now - fullAfterMs],
    });
  }
}
