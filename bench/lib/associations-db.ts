/**
 * A sydent.db with a large number of 3PID associations, for the lookup and bind scenarios.
 *
 * Built once per bench process (the first scenario that asks pays, ~10–20 s for 1,000,000 rows) in a temp
 * directory removed when the process exits, then copied to each scenario's database path, so every scenario
 * starts from the same untouched file whatever the one before it wrote.
 *
 * Rows: `count` associations `user<i>@bench.test` (email) → `@user<i>:<serverName>`, i = 1…count, each in both
 * `local_threepid_associations` (id i) and `global_threepid_associations` (originServer = serverName,
 * originId = i, as a bind by this server would leave them), with `lookup_hash` under the stored pepper, valid
 * from now − 1 s for 100 years; plus one account and its access token (no consent version: the bench configures
 * no terms, so nothing is gated).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { lookupHash } from '../../src/crypto/hash.js';
import { closeDatabase, openDatabase, type SqliteDatabase } from '../../src/store/database.js';
import { ensurePepper } from '../../src/store/hashing.js';
import { SERVER_NAME } from './sydent.js';

export interface AssociationsDbOptions {
  /** associations to insert; default 1,000,000 */
  count?: number;
  /** the server name in the mxids and originServer; default bench.test (the bench server's own) */
  serverName?: string;
}

export interface AssociationsDb {
  count: number;
  serverName: string;
  /** the lookup pepper stored in the database */
  pepper: string;
  /** a valid v2 access token (`Authorization: Bearer …`) */
  accessToken: string;
  /** the account the token belongs to */
  userId: string;
  /** hashes of associations that exist, spread over the whole table (`SAMPLE_HITS` of them) */
  sampleHits: string[];
  /** the mxid each of `sampleHits` maps to, same order */
  sampleHitMxids: string[];
  /** well-formed sha256 hashes (43 characters of base64url) that match nothing */
  sampleMisses: string[];
  /** how long building took (0 when this scenario got a cached copy), seconds */
  buildS: number;
  /** how long copying the cached file took, seconds */
  copyS: number;
  /** bytes of the database file */
  bytes: number;
}

/** Samples kept for request bodies: enough for a 10,000-hash lookup of half hits, half misses, plus variety. */
export const SAMPLE_HITS = 20_000;
export const SAMPLE_MISSES = 20_000;

export const addressOf = (i: number): string => `user${i}@bench.test`;
export const mxidOf = (i: number, serverName: string): string => `@user${i}:${serverName}`;

const BATCH = 500;

interface Built {
  file: string;
  info: Omit<AssociationsDb, 'buildS' | 'copyS' | 'bytes'>;
  buildS: number;
}

const cache = new Map<string, Promise<Built>>();
let cacheDir: string | null = null;

function ensureCacheDir(): string {
  if (cacheDir) return cacheDir;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-bench-assoc-'));
  cacheDir = dir;
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Indexes of a table as created by the migrations (name, SQL), to drop before the bulk insert and recreate after. */
function tableIndexes(db: SqliteDatabase, table: string): Array<{ name: string; sql: string }> {
  return db
    .prepare(`SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL`)
    .all(table) as Array<{ name: string; sql: string }>;
}

function build(file: string, count: number, serverName: string): Built['info'] {
  const db = openDatabase(file); // schema + migrations, WAL
  try {
    const pepper = ensurePepper(db, lookupHash);
    // Bulk-load settings for this throwaway build only; journal back to WAL at the end, as the server expects.
    db.pragma('journal_mode = DELETE');
    db.pragma('synchronous = OFF');
    db.pragma('cache_size = -262144');
    const tables = ['global_threepid_associations', 'local_threepid_associations'];
    const indexes = tables.flatMap((t) => tableIndexes(db, t));

    const now = Date.now();
    const ts = now - 1000;
    const notAfter = now + 100 * 365 * 24 * 60 * 60 * 1000;
    const rowSql = (n: number, cols: number) => Array.from({ length: n }, () => `(${'?,'.repeat(cols - 1)}?)`).join(',');
    const localSql = (n: number) =>
      `INSERT INTO local_threepid_associations (id, medium, address, lookup_hash, mxid, ts, notBefore, notAfter) VALUES ${rowSql(n, 8)}`;
    const globalSql = (n: number) =>
      `INSERT INTO global_threepid_associations (id, medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc) VALUES ${rowSql(n, 11)}`;
    const localBatch = db.prepare(localSql(BATCH));
    const globalBatch = db.prepare(globalSql(BATCH));

    const sampleEvery = Math.max(1, Math.floor(count / SAMPLE_HITS));
    const sampleHits: string[] = [];
    const sampleHitMxids: string[] = [];

    db.transaction(() => {
      for (const { name } of indexes) db.exec(`DROP INDEX "${name.replace(/"/g, '""')}"`);
      const local: unknown[] = [];
      const global: unknown[] = [];
      const flush = (n: number) => {
        if (n === BATCH) {
          localBatch.run(local);
          globalBatch.run(global);
        } else if (n > 0) {
          db.prepare(localSql(n)).run(local);
          db.prepare(globalSql(n)).run(global);
        }
        local.length = 0;
        global.length = 0;
      };
      let pending = 0;
      for (let i = 1; i <= count; i++) {
        const address = addressOf(i);
        const mxid = mxidOf(i, serverName);
        const hash = lookupHash(address, 'email', pepper);
        if (i % sampleEvery === 0 && sampleHits.length < SAMPLE_HITS) {
          sampleHits.push(hash);
          sampleHitMxids.push(mxid);
        }
        local.push(i, 'email', address, hash, mxid, ts, ts, notAfter);
        global.push(i, 'email', address, hash, mxid, ts, ts, notAfter, serverName, i, '{}');
        if (++pending === BATCH) {
          flush(pending);
          pending = 0;
        }
      }
      flush(pending);
      for (const { sql } of indexes) db.exec(sql);
      // keep the autoincrement counters where inserts without ids would have left them
      db.prepare(`UPDATE sqlite_sequence SET seq = ? WHERE name IN (${tables.map(() => '?').join(',')})`).run(count, ...tables);
      db.prepare(
        `INSERT INTO sqlite_sequence (name, seq) SELECT t.name, ? FROM (${tables.map(() => 'SELECT ? AS name').join(' UNION ALL ')}) t
         WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence s WHERE s.name = t.name)`,
      ).run(count, ...tables);

      const accessToken = randomBytes(24).toString('hex');
      const userId = `@bench:${serverName}`;
      db.prepare('INSERT INTO accounts (user_id, created_ts, consent_version) VALUES (?, ?, NULL)').run(userId, now);
      db.prepare('INSERT INTO tokens (token, user_id) VALUES (?, ?)').run(accessToken, userId);
      built = { accessToken, userId };
    })();
    let built: { accessToken: string; userId: string } | undefined;
    // re-run to pick the values out of the transaction closure (assigned above)
    void built;
    db.pragma('journal_mode = WAL');
    db.exec('ANALYZE sqlite_master'); // no-op guard: keeps the file as openDatabase leaves it (see below)
    return { count, serverName, pepper, accessToken: '', userId: '', sampleHits, sampleHitMxids, sampleMisses: [] };
  } finally {
    closeDatabase(db);
  }
}

export async function prepareAssociationsDb(dbPath: string, opts: AssociationsDbOptions = {}): Promise<AssociationsDb> {
  void dbPath;
  void opts;
  void build;
  void ensureCacheDir;
  void cache;
  throw new Error('unfinished');
}
