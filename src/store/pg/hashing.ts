/**
 * The lookup pepper on PostgreSQL (see src/store/hashing.ts): made, with every association hashed under it, in one
 * transaction when the database has none. Several nodes starting at once on a new database take an advisory lock,
 * so only the first makes a pepper and the others read it.
 */
import type pg from 'pg';

import { generatePepper, type LookupHashFn } from '../hashing.js';
import { notifySql } from './coordinator.js';
import { PEPPER_SQL } from './reads.js';

/** Any fixed number, the same in every sydent-ts. */
const PEPPER_LOCK = 0x5359_5050; // "SYPP"
const REHASH_BATCH = 1000;

async function rehashTable(client: pg.ClientBase, table: string, pepper: string, hash: LookupHashFn): Promise<void> {
  let after = Number.MIN_SAFE_INTEGER;
  for (;;) {
    const { rows } = await client.query<{ id: string; medium: string | null; address: string | null }>(
      `SELECT id::text AS id, medium, address FROM ${table} WHERE id > $1 ORDER BY id LIMIT $2`,
      [after, REHASH_BATCH],
    );
    const ids: string[] = [];
    const hashes: string[] = [];
    for (const row of rows) {
      // Sydent skips rows with an empty medium or address (broken entries) and leaves them as they are.
      if (row.medium && row.address) {
        ids.push(row.id);
        hashes.push(hash(row.address, row.medium, pepper));
      }
    }
    if (ids.length) {
      await client.query(
        `UPDATE ${table} t SET lookup_hash = u.h FROM unnest($1::bigint[], $2::text[]) AS u(id, h) WHERE t.id = u.id`,
        [ids, hashes],
      );
    }
    const last = rows[rows.length - 1];
    if (last === undefined || rows.length < REHASH_BATCH) return;
    after = Number(last.id);
  }
}

/** The pepper, made (and every association hashed with it) when the database has none. */
export async function ensurePgPepper(client: pg.ClientBase, hash: LookupHashFn): Promise<string> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [PEPPER_LOCK]);
    const existing = (await client.query<{ lookup_pepper: string | null }>(PEPPER_SQL)).rows[0]?.lookup_pepper;
    if (existing) {
      await client.query('COMMIT');
      return existing;
    }
    const pepper = generatePepper();
    // Sydent's row id 0.
    await client.query(
      'INSERT INTO hashing_metadata (id, lookup_pepper) VALUES (0, $1) ON CONFLICT (id) DO UPDATE SET lookup_pepper = EXCLUDED.lookup_pepper',
      [pepper],
    );
    await rehashTable(client, 'local_threepid_associations', pepper, hash);
    await rehashTable(client, 'global_threepid_associations', pepper, hash);
    // Nodes already running drop the pepper they read.
    await client.query(notifySql('pepper'));
    await client.query('COMMIT');
    return pepper;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/**
 * A new pepper, every association hashed again with it, in one transaction; the other nodes drop the old one at its
 * commit. Binds and inbound pushes read the pepper `FOR SHARE` (src/store/pg/writes.ts), so the UPDATE here waits
 * for those in flight to commit (their rows are then re-hashed below), and those that start meanwhile wait for this
 * commit, see the new pepper and are refused as stale, to be made again with it. Answers the associations re-hashed.
 */
export async function rotatePgPepper(client: pg.ClientBase, hash: LookupHashFn): Promise<number> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [PEPPER_LOCK]);
    const before = (await client.query<{ lookup_pepper: string | null }>(PEPPER_SQL)).rows[0]?.lookup_pepper;
    let pepper = generatePepper();
    while (pepper === before) pepper = generatePepper();
    await client.query(
      'INSERT INTO hashing_metadata (id, lookup_pepper) VALUES (0, $1) ON CONFLICT (id) DO UPDATE SET lookup_pepper = EXCLUDED.lookup_pepper',
      [pepper],
    );
    await rehashTable(client, 'local_threepid_associations', pepper, hash);
    await rehashTable(client, 'global_threepid_associations', pepper, hash);
    const { rows } = await client.query<{ n: string }>('SELECT count(*)::text AS n FROM global_threepid_associations');
    await client.query(notifySql('pepper'));
    await client.query('COMMIT');
    return Number(rows[0]?.n ?? 0);
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}
