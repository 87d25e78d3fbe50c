/**
 * Reading a table in key order on either engine, in batches, and its checksum (rows.ts) from what was read: the
 * same function over the same order on both sides.
 */
import type Database from 'better-sqlite3';
import type pg from 'pg';

import { TableChecksum } from './rows.js';
import { pgOrderBy, quote, sqliteSelect, type SqliteNames, type TableSpec } from './tables.js';

export interface Checksum {
  rows: number;
  sha256: string;
}

/** A table's checksum on SQLite (a table the file lacks counts as empty). */
export function sqliteChecksum(db: Database.Database, table: TableSpec, names: SqliteNames | undefined): Checksum {
  const sum = new TableChecksum(table.columns.map((c) => c.family));
  if (names) {
    const { list, orderBy } = sqliteSelect(table, names);
    const stmt = db.prepare(`SELECT ${list} FROM ${quote(names.table)} ORDER BY ${orderBy}`).raw(true).safeIntegers(true);
    for (const row of stmt.iterate() as IterableIterator<unknown[]>) sum.add(row);
  }
  return { rows: sum.rows, sha256: sum.digest() };
}

/**
 * A table's rows in key order, `batch` at a time, through a cursor: `client` must be inside a transaction (whose
 * snapshot the rows come from). The next batch is asked for before the current one is handed out, so the server
 * reads while the caller works.
 */
export async function* pgBatches(client: pg.ClientBase, table: TableSpec, batch: number): AsyncGenerator<unknown[][]> {
  const cursor = `migrate_db_${table.name}`;
  const list = table.columns.map((c) => quote(c.name)).join(', ');
  await client.query(`DECLARE ${quote(cursor)} NO SCROLL CURSOR FOR SELECT ${list} FROM ${quote(table.name)} ORDER BY ${pgOrderBy(table)}`);
  try {
    const fetch = () => client.query<unknown[]>({ text: `FETCH ${batch} FROM ${quote(cursor)}`, rowMode: 'array' });
    let next = fetch();
    for (;;) {
      const res = await next;
      if (res.rows.length === 0) break;
      next = fetch();
      yield res.rows;
    }
  } finally {
    await client.query(`CLOSE ${quote(cursor)}`);
  }
}

/** A table's checksum on PostgreSQL; `client` must be inside a transaction. */
export async function pgChecksum(client: pg.ClientBase, table: TableSpec): Promise<Checksum> {
  const sum = new TableChecksum(table.columns.map((c) => c.family));
  for await (const rows of pgBatches(client, table, 10_000)) for (const row of rows) sum.add(row);
  return { rows: sum.rows, sha256: sum.digest() };
}

export interface TableCheck {
  table: string;
  source: Checksum;
  target: Checksum;
}

/** The lines that say which tables differ, or [] when all match. */
export function mismatches(checks: readonly TableCheck[]): string[] {
  return checks
    .filter((c) => c.source.rows !== c.target.rows || c.source.sha256 !== c.target.sha256)
    .map(
      (c) =>
        `  ${c.table}: source ${c.source.rows} rows (sha256 ${c.source.sha256.slice(0, 16)}…), ` +
        `target ${c.target.rows} rows (sha256 ${c.target.sha256.slice(0, 16)}…)`,
    );
}
