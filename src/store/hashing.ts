/**
 * The lookup pepper (`hashing_metadata`) and the `lookup_hash` columns that depend on it.
 *
 * Every association row carries a hash made with the current pepper, so the pepper and the hashes must
 * change together: each change here is one transaction, and no lookup can ever see a pepper with hashes
 * made from another. Must run before the server answers lookups (Sydent does it at start-up for the
 * same reason).
 */
import { randomInt } from 'node:crypto';

import type Database from 'better-sqlite3';

/** Computes `lookup_hash` for one 3PID; in production src/crypto/hash.ts `lookupHash`. */
export type LookupHashFn = (address: string, medium: string, pepper: string) => string;

const PEPPER_LENGTH = 5;
const PEPPER_ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
const REHASH_BATCH = 1000;

/** A fresh pepper as Sydent makes one: 5 characters of [0-9a-zA-Z], from the CSPRNG. */
export function generatePepper(): string {
  let pepper = '';
  for (let i = 0; i < PEPPER_LENGTH; i++) pepper += PEPPER_ALPHABET[randomInt(PEPPER_ALPHABET.length)];
  return pepper;
}

/**
 * The stored pepper, or null when there is none. Like Sydent, the first row is taken whatever its id
 * (Sydent always writes id 0), and an empty pepper counts as none.
 */
export function getPepper(db: Database.Database): string | null {
  const row = db.prepare('SELECT lookup_pepper FROM hashing_metadata ORDER BY id LIMIT 1').get() as
    { lookup_pepper: unknown } | undefined;
  const value = row?.lookup_pepper;
  // Sydent decodes a bytes value here, so a BLOB pepper is tolerated the same way.
  const pepper = Buffer.isBuffer(value) ? value.toString('utf8') : value;
  return typeof pepper === 'string' && pepper !== '' ? pepper : null;
}

function rehashTable(
  db: Database.Database,
  table: 'local_threepid_associations' | 'global_threepid_associations',
  pepper: string,
  hash: LookupHashFn,
): void {
  // Keyset batches: better-sqlite3 cannot write while an iterator is open, and loading a large
  // deployment's whole table at once would be wasteful.
  const select = db.prepare(`SELECT id, medium, address FROM ${table} WHERE id > ? ORDER BY id LIMIT ?`);
  const update = db.prepare(`UPDATE ${table} SET lookup_hash = ? WHERE id = ?`);
  let after = Number.MIN_SAFE_INTEGER;
  for (;;) {
    const rows = select.all(after, REHASH_BATCH) as { id: number; medium: unknown; address: unknown }[];
    for (const row of rows) {
      // Sydent skips rows with an empty medium or address (broken entries) and leaves them as they are.
      if (
        typeof row.medium === 'string' &&
        row.medium !== '' &&
        typeof row.address === 'string' &&
        row.address !== ''
      ) {
        update.run(hash(row.address, row.medium, pepper), row.id);
      }
    }
    const last = rows[rows.length - 1];
    if (last === undefined || rows.length < REHASH_BATCH) return;
    after = last.id;
  }
}

function storePepperAndRehash(db: Database.Database, pepper: string, hash: LookupHashFn): void {
  // Same statement as Sydent, so the row stays at id 0.
  db.prepare('INSERT OR REPLACE INTO hashing_metadata (id, lookup_pepper) VALUES (0, ?)').run(pepper);
  // Tombstones (local rows with NULL mxid) are rehashed too: Sydent does, and the hash must match the
  // pepper if such a row is ever read.
  rehashTable(db, 'local_threepid_associations', pepper, hash);
  rehashTable(db, 'global_threepid_associations', pepper, hash);
}

/**
 * Returns the pepper, creating one (and hashing every association with it) when the database has none.
 */
export function ensurePepper(db: Database.Database, hash: LookupHashFn): string {
  // IMMEDIATE so that two processes starting on a new database cannot both create a pepper: the second
  // waits for the first and then reads its pepper.
  return db
    .transaction((): string => {
      const existing = getPepper(db);
      if (existing !== null) return existing;
      const pepper = generatePepper();
      storePepperAndRehash(db, pepper, hash);
      return pepper;
    })
    .immediate();
}

/** Replaces the pepper (rotation) and rehashes every association, all in one transaction. */
export function setPepper(db: Database.Database, pepper: string, hash: LookupHashFn): void {
  if (typeof pepper !== 'string' || pepper === '') throw new Error('lookup pepper must be a non-empty string');
  db.transaction(() => storePepperAndRehash(db, pepper, hash)).immediate();
}
