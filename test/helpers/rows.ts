/**
 * Reading rows in tests: a query on a server's SQLite file from a read-only connection of its own, opened and closed
 * per call (WAL lets it read beside the running server; a test sees what another process would).
 *
 *   rows(t, 'SELECT * FROM local_threepid_associations WHERE address = ?', address)
 *   row<{ lookup_pepper: string }>(path.join(dir, 'sydent.db'), 'SELECT lookup_pepper FROM hashing_metadata')
 */
import Database from 'better-sqlite3';

/** A test server (its database file) or the path of a database file. */
export type RowSource = string | { config: { db: { dbFile: string } } };

const fileOf = (source: RowSource): string => (typeof source === 'string' ? source : source.config.db.dbFile);

/** Every row of `sql`. */
export function rows<T = Record<string, unknown>>(source: RowSource, sql: string, ...params: unknown[]): T[] {
  const db = new Database(fileOf(source), { readonly: true, fileMustExist: true });
  try {
    return db.prepare(sql).all(...params) as T[];
  } finally {
    db.close();
  }
}

/** The first row of `sql`, or undefined. */
export function row<T = Record<string, unknown>>(source: RowSource, sql: string, ...params: unknown[]): T | undefined {
  return rows<T>(source, sql, ...params)[0];
}
