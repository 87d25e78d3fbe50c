/**
 * Reading a table in key order on either engine, and its checksum: the same function of the rows, in the same
 * order, on both sides. Two such functions:
 *  - the COPY checksum (into PostgreSQL): sha256 of the table as lines of PostgreSQL's COPY text format, in key
 *    order. PostgreSQL writes its side itself (COPY … TO STDOUT); on SQLite, rows.ts writes the same lines (the very
 *    text sent to PostgreSQL, where that was read in key order). Cheap on both sides, which matters at millions of
 *    rows;
 *  - the value checksum (back into SQLite): sha256 of each row's values in a canonical form (rows.ts), from the rows
 *    as read on either side.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';

import type Database from 'better-sqlite3';
import type pg from 'pg';
import { to as copyTo } from 'pg-copy-streams';

import { copyLine, TableChecksum } from './rows.js';
import { pgOrderBy, quote, sqliteSelect, type SqliteNames, type TableSpec } from './tables.js';

export interface Checksum {
  rows: number;
  sha256: string;
}

/** A table's checksum on SQLite (a table the file lacks counts as empty). */
export function sqliteChecksum(db: Database.Database, table: TableSpec, names: SqliteNames | undefined): Checksum {
  const sum = new TableChecksum(table.columns.map((c) => c.family));
  for (const row of sqliteRowsInKeyOrder(db, table, names)) sum.add(row);
  return { rows: sum.rows, sha256: sum.digest() };
}

/** A table's COPY checksum on SQLite (a table the file lacks counts as empty). */
export function sqliteCopyChecksum(db: Database.Database, table: TableSpec, names: SqliteNames | undefined): Checksum {
  const hash = createHash('sha256');
  let rows = 0;
  let chunk = '';
  for (const row of sqliteRowsInKeyOrder(db, table, names)) {
    chunk += copyLine(row);
    rows++;
    if (chunk.length > 1 << 16) {
      hash.update(chunk);
      chunk = '';
    }
  }
  hash.update(chunk);
  return { rows, sha256: hash.digest('hex') };
}

/** A table's rows on SQLite as raw value arrays (integers as BigInt), in key order; none when the file lacks it. */
function sqliteRowsInKeyOrder(
  db: Database.Database,
  table: TableSpec,
  names: SqliteNames | undefined,
): Iterable<unknown[]> {
  if (!names) return [];
  const { list, orderBy } = sqliteSelect(table, names);
  return db
    .prepare(`SELECT ${list} FROM ${quote(names.table)} ORDER BY ${orderBy}`)
    .raw(true)
    .safeIntegers(true)
    .iterate() as IterableIterator<unknown[]>;
}

/** A table's COPY checksum on PostgreSQL, as the server writes the lines (one per row: newlines in values are escaped). */
export async function pgCopyChecksum(client: pg.ClientBase, table: TableSpec): Promise<Checksum> {
  const hash = createHash('sha256');
  let rows = 0;
  const list = table.columns.map((c) => quote(c.name)).join(', ');
  const stream = client.query(
    copyTo(`COPY (SELECT ${list} FROM ${quote(table.name)} ORDER BY ${pgOrderBy(table)}) TO STDOUT`),
  );
  stream.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) rows++;
  });
  await once(stream, 'end');
  return { rows, sha256: hash.digest('hex') };
}

/**
 * A table's rows in key order, `batch` at a time, through a cursor: `client` must be inside a transaction (whose
 * snapshot the rows come from). The next batch is asked for before the current one is handed out, so the server
 * reads while the caller works.
 */
export async function* pgBatches(client: pg.ClientBase, table: TableSpec, batch: number): AsyncGenerator<unknown[][]> {
  const cursor = `migrate_db_${table.name}`;
  const list = table.columns.map((c) => quote(c.name)).join(', ');
  await client.query(
    `DECLARE ${quote(cursor)} NO SCROLL CURSOR FOR SELECT ${list} FROM ${quote(table.name)} ORDER BY ${pgOrderBy(table)}`,
  );
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
