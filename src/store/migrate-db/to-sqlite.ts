/**
 * PostgreSQL → a new sydent.db, so that an operator can always go back to SQLite, or to Sydent.
 *
 * The file is made as sydent-ts makes a new database (Sydent's final schema, user_version 5, then our migrations:
 * Sydent ignores the versions above its own and the tables it does not know) up to the version the data is copied at
 * (tables.ts, DATA_SCHEMA_VERSION), filled from one snapshot of the source, checked (row counts and checksums per
 * table: the source's taken from the rows as they were read, the file's by reading it back), brought to the latest
 * version (the state counts seeded from the rows copied, and their triggers, which must not see the copy), and only
 * then renamed to the name asked for. It is written as `PATH.partial` first:
 * an interrupted run leaves no file that looks finished, and the next run starts that file again (the source is
 * read in one snapshot, so there is nothing to resume).
 */
import { existsSync, renameSync, rmSync } from 'node:fs';

import type Database from 'better-sqlite3';
import type pg from 'pg';

import { closeDatabase, openDatabase } from '../database.js';
import { getUserVersion, migrate, OUR_MIGRATIONS } from '../migrations.js';
import { connectPg, describePgUrl } from '../pg/connect.js';
import { PG_LATEST_VERSION, pgSchemaVersion } from '../pg/migrations.js';
import { AUTOINCREMENT_TABLES } from '../pg/schema.js';
import { MigrateDbError, type MigrateIo } from './errors.js';
import { Progress } from './progress.js';
import { mismatches, pgBatches, sqliteChecksum, type Checksum, type TableCheck } from './read.js';
import { TableChecksum } from './rows.js';
import {
  columnDifferences,
  DATA_SCHEMA_VERSION,
  pgTables,
  PROGRESS_TABLE,
  quote,
  sqliteNames,
  type SqliteNames,
  type TableSpec,
} from './tables.js';

export interface ToSqliteOptions {
  sourceUrl: string;
  targetPath: string;
  /** rows per read and per insert transaction; default 5,000 */
  batchRows?: number;
  io: MigrateIo;
}

const SQLITE_FILES = ['', '-wal', '-shm', '-journal', '.lock'];

export async function postgresToSqlite(opts: ToSqliteOptions): Promise<void> {
  const { io, targetPath } = opts;
  const batchRows = opts.batchRows ?? 5000;
  if (existsSync(targetPath)) {
    throw new MigrateDbError(`refusing to write ${targetPath}: it exists; migrate-db writes a new file only`);
  }
  const partial = `${targetPath}.partial`;
  if (existsSync(partial)) {
    io.stderr(`migrate-db: removing ${partial}, left by an interrupted run, and starting again\n`);
  }
  for (const suffix of SQLITE_FILES) rmSync(`${partial}${suffix}`, { force: true });

  const client = await connectPg(opts.sourceUrl, { bigints: true });
  let db: Database.Database | undefined;
  let done = false;
  try {
    const where = describePgUrl(opts.sourceUrl);
    const version = await pgSchemaVersion(client);
    if (version === 0) throw new MigrateDbError(`${where} has no sydent-ts schema: nothing to copy`);
    if (version > PG_LATEST_VERSION) {
      throw new MigrateDbError(
        `${where} is at schema version ${version}, newer than this sydent-ts knows (${PG_LATEST_VERSION}): run a newer sydent-ts`,
      );
    }
    if (
      (await client.query<{ t: string | null }>('SELECT to_regclass($1) AS t', [PROGRESS_TABLE])).rows[0]?.t != null
    ) {
      throw new MigrateDbError(`${where} holds an unfinished migrate-db copy: finish that copy first (run it again)`);
    }

    try {
      db = openDatabase(partial, { migrations: OUR_MIGRATIONS.filter((m) => m.version <= DATA_SCHEMA_VERSION) });
    } catch (err) {
      throw new MigrateDbError(`cannot create ${partial}: ${(err as Error).message}`);
    }
    // A file nobody else has open yet, checked before it is renamed: durability per commit buys nothing here.
    db.pragma('synchronous = OFF');

    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const tables = await pgTables(client);
    const names = new Map<string, SqliteNames>();
    for (const t of tables) {
      const n = sqliteNames(db, t.name);
      const diff = n && columnDifferences(t, n);
      if (!n || diff!.missing.length || diff!.extra.length) {
        throw new MigrateDbError(`table ${t.name} of ${where} does not match the SQLite schema of this sydent-ts`);
      }
      names.set(t.name, n);
    }
    let total = 0;
    for (const t of tables) {
      total += Number((await client.query<{ n: bigint }>(`SELECT count(*) AS n FROM ${quote(t.name)}`)).rows[0]!.n);
    }
    const progress = new Progress({ write: io.stderr, tty: io.tty, total, already: 0 });

    const indexes = dropSqliteIndexes(db, [...names.values()]);
    // The source's checksums come with the copy, which reads each table in key order.
    const sourceSums = new Map<string, Checksum>();
    for (const t of tables)
      sourceSums.set(t.name, await copyTable(client, db, t, names.get(t.name)!, batchRows, progress));
    progress.say(`migrate-db: ${progress.summary()}`);
    await setSequences(client, db, tables);
    progress.say(`migrate-db: building ${indexes.length} indexes`);
    for (const sql of indexes) db.exec(sql);

    progress.say('migrate-db: verifying row counts and checksums');
    const checks: TableCheck[] = [];
    for (const t of tables) {
      checks.push({ table: t.name, source: sourceSums.get(t.name)!, target: sqliteChecksum(db, t, names.get(t.name)) });
    }
    await client.query('COMMIT');
    const bad = mismatches(checks);
    if (bad.length) throw new MigrateDbError(`the copy does not match the source:\n${bad.join('\n')}`);
    migrate(db);

    const schemaVersion = getUserVersion(db);
    closeDatabase(db);
    db = undefined;
    renameSync(partial, targetPath);
    done = true;
    const rows = checks.reduce((a, c) => a + c.target.rows, 0);
    io.stderr(
      `migrate-db: verified: ${tables.length} tables, ${rows.toLocaleString('en')} rows, counts and checksums equal; ` +
        `${targetPath} is at user_version ${schemaVersion}\n`,
    );
  } finally {
    if (db) closeDatabase(db);
    await client.end().catch(() => undefined);
    if (!done) for (const suffix of SQLITE_FILES) rmSync(`${partial}${suffix}`, { force: true });
  }
}

/** Drops the named indexes of the tables for the load; returns their CREATE statements, to run afterwards. */
function dropSqliteIndexes(db: Database.Database, tables: readonly SqliteNames[]): string[] {
  const out: string[] = [];
  const list = db.prepare(
    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name = ?",
  );
  for (const t of tables) {
    for (const { name, sql } of list.all(t.table) as { name: string; sql: string }[]) {
      db.exec(`DROP INDEX ${quote(name)}`);
      // Recreated from SQLite's own text of it, so sqlite_master ends up as the migrations wrote it.
      out.push(sql);
    }
  }
  return out;
}

const ROWS_PER_INSERT = 200;

async function copyTable(
  client: pg.ClientBase,
  db: Database.Database,
  table: TableSpec,
  names: SqliteNames,
  batchRows: number,
  progress: Progress,
): Promise<Checksum> {
  const sum = new TableChecksum(table.columns.map((c) => c.family));
  const cols = table.columns.map((c) => quote(names.columns.get(c.name)!)).join(', ');
  const one = `(${table.columns.map(() => '?').join(', ')})`;
  const insertSql = (n: number) =>
    `INSERT INTO ${quote(names.table)} (${cols}) VALUES ${Array(n).fill(one).join(', ')}`;
  const full = db.prepare(insertSql(ROWS_PER_INSERT));
  const insert = db.transaction((rows: unknown[][]) => {
    let i = 0;
    for (; i + ROWS_PER_INSERT <= rows.length; i += ROWS_PER_INSERT)
      full.run(rows.slice(i, i + ROWS_PER_INSERT).flat());
    if (i < rows.length) db.prepare(insertSql(rows.length - i)).run(rows.slice(i).flat());
  });
  for await (const rows of pgBatches(client, table, batchRows)) {
    for (const row of rows) sum.add(row);
    insert(rows);
    progress.add(rows.length, table.name);
  }
  return { rows: sum.rows, sha256: sum.digest() };
}

/** sqlite_sequence from the identity sequences of the AUTOINCREMENT tables, so no id is ever given twice. */
async function setSequences(client: pg.ClientBase, db: Database.Database, tables: readonly TableSpec[]): Promise<void> {
  const update = db.prepare('UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?');
  const insert = db.prepare('INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)');
  for (const t of tables) {
    if (!t.identity || !AUTOINCREMENT_TABLES.includes(t.name)) continue;
    const seq = (
      await client.query<{ s: string }>('SELECT pg_get_serial_sequence($1, $2) AS s', [quote(t.name), t.identity])
    ).rows[0]!.s;
    const { last_value: last, is_called: called } = (
      await client.query<{ last_value: bigint; is_called: boolean }>(`SELECT last_value, is_called FROM ${seq}`)
    ).rows[0]!;
    if (!called) continue;
    if (update.run(last, t.name).changes === 0) insert.run(t.name, last);
  }
}
