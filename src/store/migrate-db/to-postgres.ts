/**
 * sydent.db → an empty PostgreSQL database.
 *
 * The target gets the PostgreSQL schema (src/store/pg/) up to the version the data is copied at (tables.ts,
 * DATA_SCHEMA_VERSION), then every data table's rows in rowid order, a batch per
 * transaction through COPY, each batch committed together with the last rowid it copied (a progress table in the
 * target). Killed at any point, the next run with the same source finds that table and goes on from there; a target
 * with any other table in it is refused. Secondary indexes are dropped for the load and built once at the end
 * (faster than keeping them up to date row by row). Then every table's row count and checksum are compared on both
 * sides (read.ts: sha256 of the COPY text in key order; the source's is that of the text sent where the copy read it
 * in key order, else read again; the target's as PostgreSQL writes it back); only when all match are the remaining
 * migrations applied (which derive the state counts from the rows copied) and the progress table dropped.
 *
 * The source is read in one transaction (one snapshot) and never written; a running server on it is refused (its
 * instance lock). Its version must be one this code knows: Sydent's 5 (a Sydent-made file) or one of ours.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { realpathSync } from 'node:fs';

import Database from 'better-sqlite3';
import type pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';

import { acquireInstanceLock } from '../instance-lock.js';
import { getUserVersion, OUR_MIGRATIONS } from '../migrations.js';
import { connectPg, describePgUrl } from '../pg/connect.js';
import { migratePg, PG_MIGRATIONS, pgSchemaVersion } from '../pg/migrations.js';
import { AUTOINCREMENT_TABLES } from '../pg/schema.js';
import { SYDENT_SCHEMA_VERSION } from '../schema.js';
import { MigrateDbError, type MigrateIo } from './errors.js';
import { Progress } from './progress.js';
import { mismatches, pgCopyChecksum, sqliteCopyChecksum, type Checksum, type TableCheck } from './read.js';
import { checkValue, copyLine, firstBadValue } from './rows.js';
import {
  columnDifferences,
  DATA_SCHEMA_VERSION,
  pgTables,
  PROGRESS_TABLE,
  quote,
  sqliteExtraTables,
  sqliteNames,
  sqliteSelect,
  STATE_TABLE,
  type SqliteNames,
  type TableSpec,
} from './tables.js';

export interface ToPostgresOptions {
  sourcePath: string;
  targetUrl: string;
  /** rows per COPY (and per committed transaction); default 5,000 */
  batchRows?: number;
  io: MigrateIo;
}

/** One migrate-db at a time per target: a session advisory lock, held for the whole copy. */
const COPY_LOCK = 0x5359_4443; // "SYDC"

interface ProgressRow {
  table_name: string;
  /** int8 columns come as decimal strings */
  last_rowid: string | null;
  rows_copied: string;
  done: boolean;
}

interface StoredIndex {
  name: string;
  def: string;
}

export async function sqliteToPostgres(opts: ToPostgresOptions): Promise<void> {
  const { io } = opts;
  const batchRows = opts.batchRows ?? 5000;
  const lock = acquireInstanceLock(opts.sourcePath);
  let src: Database.Database | undefined;
  let client: pg.Client | undefined;
  try {
    src = openSource(opts.sourcePath);
    client = await connectPg(opts.targetUrl);
    const locked = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [COPY_LOCK]);
    if (!locked.rows[0]!.ok)
      throw new MigrateDbError(`another migrate-db is copying into ${describePgUrl(opts.targetUrl)}`);

    const source = realpathSync(opts.sourcePath);
    await prepareTarget(client, source, opts.targetUrl, io);
    await migratePg(client, PG_MIGRATIONS, DATA_SCHEMA_VERSION);
    const indexes = await dropSecondaryIndexes(client);

    const tables = await pgTables(client);
    const names = new Map<string, SqliteNames | undefined>();
    for (const t of tables) {
      const n = sqliteNames(src, t.name);
      if (n) {
        const { missing, extra } = columnDifferences(t, n);
        if (missing.length || extra.length) {
          throw new MigrateDbError(
            `table ${t.name} of ${opts.sourcePath} does not have the columns sydent-ts knows` +
              (missing.length ? `; missing: ${missing.join(', ')}` : '') +
              (extra.length ? `; unknown: ${extra.join(', ')}` : ''),
          );
        }
      }
      names.set(t.name, n);
    }
    const extra = sqliteExtraTables(src, tables);
    if (extra.length) io.stderr(`migrate-db: not copied (not part of the schema): ${extra.join(', ')}\n`);

    // One snapshot of the source for the copy and the checksums.
    src.exec('BEGIN');
    const counts = new Map(tables.map((t) => [t.name, countRows(src!, names.get(t.name))]));
    const total = [...counts.values()].reduce((a, b) => a + b, 0);
    const progressRows = await readProgress(client);
    const already = progressRows.reduce((a, r) => a + Number(r.rows_copied), 0);
    const progress = new Progress({ write: io.stderr, tty: io.tty, total, already });
    if (already > 0)
      progress.say(
        `migrate-db: resuming: ${already.toLocaleString('en')} of ${total.toLocaleString('en')} rows were copied before`,
      );

    // The source's checksums, taken from the rows as they are copied where that reads them in key order.
    const sourceSums = new Map<string, Checksum>();
    for (const t of tables) {
      const row = progressRows.find((r) => r.table_name === t.name);
      if (row?.done) continue;
      const n = names.get(t.name);
      if (n) {
        const from = row?.last_rowid == null ? null : BigInt(row.last_rowid);
        const sum = await copyTable(client, src, t, n, from, batchRows, progress);
        if (sum) sourceSums.set(t.name, sum);
      }
      await client.query(
        `INSERT INTO ${PROGRESS_TABLE} (table_name, done) VALUES ($1, true) ON CONFLICT (table_name) DO UPDATE SET done = true`,
        [t.name],
      );
    }
    progress.say(`migrate-db: ${progress.summary()}`);

    await setSequences(client, src, tables);

    // The migrations after the data's version run only once the copy is verified: a target already past it was
    // verified by a run stopped before it dropped its bookkeeping, and is not verified again (the step may have
    // removed rows the source still has: machine rows whose session is gone).
    const verifiedBefore = (await pgSchemaVersion(client)) > DATA_SCHEMA_VERSION;
    const checks = verifiedBefore
      ? undefined
      : await verify(client, src, opts.targetUrl, tables, names, sourceSums, indexes, progress);
    if (verifiedBefore) progress.say('migrate-db: the copy was verified by the run that was stopped');
    // The state counts, seeded from the rows copied.
    await migratePg(client);
    await client.query('BEGIN');
    await client.query(`DROP TABLE ${PROGRESS_TABLE}, ${STATE_TABLE}`);
    await client.query('COMMIT');
    if (checks) {
      const rows = checks.reduce((a, c) => a + c.target.rows, 0);
      io.stderr(
        `migrate-db: verified: ${tables.length} tables, ${rows.toLocaleString('en')} rows, counts and checksums equal\n`,
      );
    }
  } finally {
    if (src?.inTransaction) src.exec('COMMIT');
    src?.close();
    await client?.end().catch(() => undefined);
    lock.release();
  }
}

/**
 * Every copied table's row count and checksum on both sides; throws when any differs. The indexes are built on a
 * second connection meanwhile: the server builds while this process hashes (the primary keys the reads are ordered
 * by are there already).
 */
async function verify(
  client: pg.Client,
  src: Database.Database,
  targetUrl: string,
  tables: readonly TableSpec[],
  names: ReadonlyMap<string, SqliteNames | undefined>,
  sourceSums: ReadonlyMap<string, Checksum>,
  indexes: readonly StoredIndex[],
  progress: Progress,
): Promise<TableCheck[]> {
  progress.say('migrate-db: verifying row counts and checksums');
  const indexer = await connectPg(targetUrl);
  const indexing = buildIndexes(indexer, indexes, tables, progress).finally(() => indexer.end().catch(() => undefined));
  const checks: TableCheck[] = [];
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    try {
      for (const t of tables) {
        const target = await pgCopyChecksum(client, t);
        checks.push({
          table: t.name,
          source: sourceSums.get(t.name) ?? sqliteCopyChecksum(src, t, names.get(t.name)),
          target,
        });
      }
    } finally {
      await client.query('COMMIT');
    }
  } finally {
    // Waited for whatever happened above: no build is left running unobserved.
    await indexing;
  }
  const bad = mismatches(checks);
  if (bad.length) {
    throw new MigrateDbError(
      `the copy does not match the source:\n${bad.join('\n')}\n` +
        'Was the source written to during the copy? Drop the target database, create it again, and run migrate-db with the server stopped.',
    );
  }
  return checks;
}

function openSource(path: string): Database.Database {
  let db: Database.Database;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new MigrateDbError(`cannot open ${path}: ${(err as Error).message}`);
  }
  try {
    const version = getUserVersion(db);
    const latest = SYDENT_SCHEMA_VERSION + OUR_MIGRATIONS.length;
    if (version > latest) {
      throw new MigrateDbError(
        `${path} is at schema version ${version}, newer than this sydent-ts knows (${latest}): run a newer sydent-ts`,
      );
    }
    if (version < SYDENT_SCHEMA_VERSION) {
      throw new MigrateDbError(
        `${path} is at schema version ${version}: start sydent-ts (or Sydent) on it once to bring it to version ${SYDENT_SCHEMA_VERSION} or later, then copy it`,
      );
    }
  } catch (err) {
    db.close();
    if (err instanceof MigrateDbError) throw err;
    throw new MigrateDbError(`cannot read ${path}: ${(err as Error).message}`);
  }
  return db;
}

async function tableExists(client: pg.ClientBase, name: string): Promise<boolean> {
  const res = await client.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [quote(name)]);
  return res.rows[0]?.t != null;
}

/** A new copy's bookkeeping in an empty target, or the check that an unfinished one is of this source. */
async function prepareTarget(client: pg.Client, source: string, url: string, io: MigrateIo): Promise<void> {
  if (await tableExists(client, STATE_TABLE)) {
    const res = await client.query<{ value: string }>(`SELECT value FROM ${STATE_TABLE} WHERE key = 'source'`);
    const was = res.rows[0]?.value;
    if (was !== source) {
      throw new MigrateDbError(
        `${describePgUrl(url)} holds an unfinished copy of ${was ?? 'another database'}, not of ${source}: ` +
          'give that source again to finish it, or drop the target database and create it again',
      );
    }
    io.stderr(
      `migrate-db: ${describePgUrl(url)} holds an unfinished copy of ${source}: going on from where it stopped\n`,
    );
    return;
  }
  const tables = await client.query<{ table_name: string }>(
    'SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name',
  );
  if (tables.rows.length > 0) {
    const list = tables.rows.map((r) => r.table_name);
    throw new MigrateDbError(
      `refusing to copy into ${describePgUrl(url)}: it is not empty (${list.length} table${list.length === 1 ? '' : 's'}: ` +
        `${list.slice(0, 5).join(', ')}${list.length > 5 ? ', …' : ''}); migrate-db copies into an empty database only`,
    );
  }
  await client.query('BEGIN');
  try {
    await client.query(`CREATE TABLE ${STATE_TABLE} (key text PRIMARY KEY, value text NOT NULL)`);
    await client.query(
      `CREATE TABLE ${PROGRESS_TABLE} (table_name text PRIMARY KEY, last_rowid bigint, rows_copied bigint NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false)`,
    );
    await client.query(`INSERT INTO ${STATE_TABLE} (key, value) VALUES ('source', $1)`, [source]);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

async function readProgress(client: pg.ClientBase): Promise<ProgressRow[]> {
  return (await client.query<ProgressRow>(`SELECT table_name, last_rowid, rows_copied, done FROM ${PROGRESS_TABLE}`))
    .rows;
}

/**
 * Drops the secondary indexes (not those of primary keys) for the load, remembering their definitions in the
 * target, once: a resumed run finds them remembered and dropped already.
 */
async function dropSecondaryIndexes(client: pg.ClientBase): Promise<StoredIndex[]> {
  const stored = await client.query<{ value: string }>(`SELECT value FROM ${STATE_TABLE} WHERE key = 'indexes'`);
  if (stored.rows[0]) return JSON.parse(stored.rows[0].value) as StoredIndex[];
  await client.query('BEGIN');
  try {
    const res = await client.query<StoredIndex>(
      `SELECT i.relname AS name, pg_get_indexdef(x.indexrelid) AS def
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = current_schema() AND t.relname NOT IN ($1, $2)
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
        ORDER BY i.relname`,
      [PROGRESS_TABLE, STATE_TABLE],
    );
    await client.query(`INSERT INTO ${STATE_TABLE} (key, value) VALUES ('indexes', $1)`, [JSON.stringify(res.rows)]);
    for (const { name } of res.rows) await client.query(`DROP INDEX ${quote(name)}`);
    await client.query('COMMIT');
    return res.rows;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/** The indexes dropped for the load (those not there yet: a resumed run may have built some), then ANALYZE. */
async function buildIndexes(
  client: pg.ClientBase,
  indexes: readonly StoredIndex[],
  tables: readonly TableSpec[],
  progress: Progress,
): Promise<void> {
  const missing: StoredIndex[] = [];
  for (const idx of indexes) if (!(await tableExists(client, idx.name))) missing.push(idx);
  const started = performance.now();
  await client.query("SET maintenance_work_mem = '256MB'");
  for (const idx of missing) await client.query(idx.def);
  // Statistics for the planner, which would otherwise know nothing of the rows just loaded.
  for (const t of tables) await client.query(`ANALYZE ${quote(t.name)}`);
  progress.say(
    `migrate-db: ${missing.length} indexes built and statistics gathered in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
}

function countRows(src: Database.Database, names: SqliteNames | undefined): number {
  if (!names) return 0;
  return Number(
    src
      .prepare(`SELECT count(*) FROM ${quote(names.table)}`)
      .pluck()
      .get(),
  );
}

async function copyTable(
  client: pg.Client,
  src: Database.Database,
  table: TableSpec,
  names: SqliteNames,
  from: bigint | null,
  batchRows: number,
  progress: Progress,
): Promise<Checksum | undefined> {
  const { list } = sqliteSelect(table, names);
  // A table keyed by its rowid, copied from the start, is read in key order: its checksum is that of the text sent.
  const sum = from === null && isRowidKeyed(src, table, names) ? createHash('sha256') : undefined;
  let copied = 0;
  // The rowid last, so that a row's first n values are the columns' (no copy of each row to drop it).
  const base = `SELECT ${list}, rowid FROM ${quote(names.table)}`;
  const n = table.columns.length;
  const first = src.prepare(`${base} ORDER BY rowid LIMIT ?`).raw(true).safeIntegers(true);
  const next = src.prepare(`${base} WHERE rowid > ? ORDER BY rowid LIMIT ?`).raw(true).safeIntegers(true);
  const copySql = `COPY ${quote(table.name)} (${table.columns.map((c) => quote(c.name)).join(', ')}) FROM STDIN`;

  let last = from;
  let pending: Promise<void> | undefined;
  try {
    for (;;) {
      const rows = (last === null ? first.all(batchRows) : next.all(last, batchRows)) as unknown[][];
      if (rows.length === 0) break;
      let text = '';
      for (const row of rows) {
        const bad = firstBadValue(row, table.columns);
        if (bad >= 0) checkValue(row[bad], table.columns[bad]!, `${names.table} row ${String(row[n])}`);
        text += copyLine(row, n);
      }
      sum?.update(text);
      copied += rows.length;
      const firstRowid = rows[0]![n] as bigint;
      last = rows[rows.length - 1]![n] as bigint;
      // Read and encode the next batch while the server takes this one.
      await pending;
      pending = writeBatch(client, table.name, copySql, text, firstRowid, last, rows.length).then(() =>
        progress.add(rows.length, table.name),
      );
    }
    await pending;
  } catch (err) {
    // A batch still in flight ends (committed or not) before the error is reported.
    await pending?.catch(() => undefined);
    throw err;
  }
  return sum && { rows: copied, sha256: sum.digest('hex') };
}

/** True when the table's key is its INTEGER PRIMARY KEY, which SQLite makes the rowid itself. */
function isRowidKeyed(src: Database.Database, table: TableSpec, names: SqliteNames): boolean {
  if (table.key.length !== 1) return false;
  const info = src.prepare(`PRAGMA table_info(${quote(names.table)})`).all() as {
    name: string;
    type: string;
    pk: number;
  }[];
  const pk = info.filter((c) => c.pk > 0);
  return pk.length === 1 && pk[0]!.type.toUpperCase() === 'INTEGER' && pk[0]!.name.toLowerCase() === table.key[0];
}

async function writeBatch(
  client: pg.Client,
  table: string,
  copySql: string,
  text: string,
  firstRowid: bigint,
  lastRowid: bigint,
  rows: number,
): Promise<void> {
  await client.query('BEGIN');
  try {
    const stream = client.query(copyFrom(copySql));
    stream.end(text);
    await once(stream, 'finish');
    await client.query(
      `INSERT INTO ${PROGRESS_TABLE} (table_name, last_rowid, rows_copied) VALUES ($1, $2, $3)
       ON CONFLICT (table_name) DO UPDATE SET last_rowid = $2, rows_copied = ${PROGRESS_TABLE}.rows_copied + $3`,
      [table, lastRowid, rows],
    );
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw new MigrateDbError(
      `PostgreSQL refused rows ${firstRowid}…${lastRowid} of ${table}: ${(err as Error).message}`,
    );
  }
}

/**
 * Each identity sequence past the ids copied, so that the next insert without an id gets a new one; for the
 * AUTOINCREMENT tables past SQLite's counter too (ids of deleted rows are never given again).
 */
async function setSequences(
  client: pg.ClientBase,
  src: Database.Database,
  tables: readonly TableSpec[],
): Promise<void> {
  const hasSequenceTable =
    src.prepare("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").get() !== undefined;
  const counter = hasSequenceTable
    ? src.prepare('SELECT seq FROM sqlite_sequence WHERE lower(name) = ?').pluck().safeIntegers(true)
    : undefined;
  for (const t of tables) {
    if (!t.identity) continue;
    const seq = (
      await client.query<{ s: string }>('SELECT pg_get_serial_sequence($1, $2) AS s', [quote(t.name), t.identity])
    ).rows[0]!.s;
    const m = (await client.query<{ m: string | null }>(`SELECT max(${quote(t.identity)}) AS m FROM ${quote(t.name)}`))
      .rows[0]!.m;
    const max = m === null ? null : BigInt(m);
    const sqliteSeq = AUTOINCREMENT_TABLES.includes(t.name)
      ? ((counter?.get(t.name) as bigint | undefined) ?? null)
      : null;
    const top = [max, sqliteSeq]
      .filter((v): v is bigint => v !== null)
      .reduce<bigint | null>((a, b) => (a === null || b > a ? b : a), null);
    if (top === null || top < 1n) await client.query('SELECT setval($1, 1, false)', [seq]);
    else await client.query('SELECT setval($1, $2, true)', [seq, top]);
  }
}
