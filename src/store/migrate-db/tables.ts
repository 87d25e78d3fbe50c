/**
 * Which tables migrate-db copies and how it reads them in the same order on both engines. The PostgreSQL schema
 * (after its migrations) is the list: every table of ours and Sydent's but the derived ones. A SQLite database may
 * lack some of them (a Sydent-made sydent.db has none of ours): those are empty on the other side too.
 */
import type Database from 'better-sqlite3';
import type pg from 'pg';

import { OUR_MIGRATIONS } from '../migrations.js';
import { PG_VERSION_TABLE, RATE_BUCKETS_TABLE } from '../pg/schema.js';
import type { ColumnSpec, Family } from './rows.js';

/**
 * The counts of migration 12 ('state_counts'): derived from the session and callback rows, not data of their own.
 * migrate-db builds a target's schema up to DATA_SCHEMA_VERSION, copies the data tables, and only then applies the
 * migrations after it, which seed the counts from the rows copied (and, in SQLite, create the triggers, which would
 * otherwise count every copied row on top of the seeded counts). They are never copied; the data they come from is
 * what is verified. A later migration that adds a data table must move DATA_SCHEMA_VERSION past it
 * (test/pg-schema.test.ts fails until it does).
 */
export const DERIVED_TABLES: readonly string[] = [
  'sydent_ts_machine_counts',
  'sydent_ts_sydent_session_counts',
  'sydent_ts_callback_counts',
];
export const DATA_SCHEMA_VERSION = OUR_MIGRATIONS.find((m) => m.name === 'state_counts')!.version - 1;

/** migrate-db's own bookkeeping in a PostgreSQL target, dropped once the copy is verified. */
export const PROGRESS_TABLE = 'sydent_ts_migrate_db_progress';
export const STATE_TABLE = 'sydent_ts_migrate_db_state';

export interface TableSpec {
  name: string;
  /** in PostgreSQL's column order, names as PostgreSQL has them */
  columns: ColumnSpec[];
  /** the columns the rows are ordered by: the primary key, else every column */
  key: string[];
  /** the identity column (every integer primary key), whose sequence must follow the copied ids */
  identity: string | null;
}

/**
 * The tables of the PostgreSQL schema that are copied (the version table, the derived ones, migrate-db's own and the
 * rate limits' working table left out).
 */
export async function pgTables(client: pg.ClientBase): Promise<TableSpec[]> {
  const cols = await client.query<{ table_name: string; column_name: string; data_type: string; is_identity: string }>(
    `SELECT table_name, column_name, data_type, is_identity
       FROM information_schema.columns
      WHERE table_schema = current_schema() AND table_name::text <> ALL ($1::text[])
      ORDER BY table_name, ordinal_position`,
    [[PG_VERSION_TABLE, PROGRESS_TABLE, STATE_TABLE, RATE_BUCKETS_TABLE, ...DERIVED_TABLES]],
  );
  const pks = await client.query<{ table_name: string; column_name: string }>(
    `SELECT tc.table_name, k.column_name
       FROM information_schema.table_constraints tc
       JOIN information_schema.key_column_usage k USING (constraint_schema, constraint_name)
      WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = current_schema()
      ORDER BY tc.table_name, k.ordinal_position`,
  );
  const tables = new Map<string, TableSpec>();
  for (const c of cols.rows) {
    const family: Family | null =
      c.data_type === 'bigint' || c.data_type === 'integer' ? 'integer' : c.data_type === 'text' ? 'text' : null;
    if (!family)
      throw new Error(
        `column ${c.table_name}.${c.column_name} has type ${c.data_type}, which migrate-db does not copy`,
      );
    let t = tables.get(c.table_name);
    if (!t) tables.set(c.table_name, (t = { name: c.table_name, columns: [], key: [], identity: null }));
    t.columns.push({ name: c.column_name, family });
    if (c.is_identity === 'YES') t.identity = c.column_name;
  }
  for (const pk of pks.rows) tables.get(pk.table_name)?.key.push(pk.column_name);
  for (const t of tables.values()) if (t.key.length === 0) t.key = t.columns.map((c) => c.name);
  return [...tables.values()];
}

/** A table as a SQLite database spells it: its name, and its columns' (lower-cased name → SQLite's spelling). */
export interface SqliteNames {
  table: string;
  columns: Map<string, string>;
}

/** The SQLite spelling of `table` and its columns; undefined when the database has no such table. */
export function sqliteNames(db: Database.Database, table: string): SqliteNames | undefined {
  const name = db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND lower(name) = ?")
    .pluck()
    .get(table) as string | undefined;
  if (name === undefined) return undefined;
  const cols = db.prepare(`PRAGMA table_info(${quote(name)})`).all() as { name: string }[];
  return { table: name, columns: new Map(cols.map((c) => [c.name.toLowerCase(), c.name])) };
}

/** PostgreSQL columns of `table` that the SQLite table lacks, and SQLite columns that PostgreSQL lacks. */
export function columnDifferences(table: TableSpec, names: SqliteNames): { missing: string[]; extra: string[] } {
  const want = new Set(table.columns.map((c) => c.name));
  return {
    missing: table.columns.map((c) => c.name).filter((c) => !names.columns.has(c)),
    extra: [...names.columns.values()].filter((c) => !want.has(c.toLowerCase())),
  };
}

/** Tables of a SQLite database that the PostgreSQL schema does not have (SQLite's own and the derived ones left out). */
export function sqliteExtraTables(db: Database.Database, known: readonly TableSpec[]): string[] {
  const names = db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .pluck()
    .all() as string[];
  const have = new Set([...known.map((t) => t.name), ...DERIVED_TABLES]);
  return names.filter((n) => !have.has(n.toLowerCase()));
}

/** An identifier quoted for either engine. */
export function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * The SELECT list and ORDER BY of a table on SQLite (names mapped to SQLite's spelling). SQLite compares text
 * bytewise (BINARY) and puts NULLs first, as pgOrderBy asks PostgreSQL to.
 */
export function sqliteSelect(table: TableSpec, names: SqliteNames): { list: string; orderBy: string } {
  const col = (n: string) => quote(names.columns.get(n) ?? n);
  return { list: table.columns.map((c) => col(c.name)).join(', '), orderBy: table.key.map(col).join(', ') };
}

export function pgOrderBy(table: TableSpec): string {
  return table.key
    .map((k) => {
      const family = table.columns.find((c) => c.name === k)!.family;
      return `${quote(k)}${family === 'text' ? ' COLLATE "C"' : ''} NULLS FIRST`;
    })
    .join(', ');
}
