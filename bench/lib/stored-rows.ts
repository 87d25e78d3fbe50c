import Database from 'better-sqlite3';
import pg from 'pg';

/** Where a server under test keeps its rows: its SQLite file, or its PostgreSQL database when `pgUrl` is set. */
export interface StoredDatabase {
  dbPath: string;
  pgUrl: string | null;
}

/**
 * Rows of one read-only query on a server's database, whichever the engine: `sql` with `?` placeholders (numbered
 * for PostgreSQL here). Give every column a lower-case alias: PostgreSQL folds unquoted names to lower case.
 */
export async function storedRows<R>(db: StoredDatabase, sql: string, params: unknown[] = []): Promise<R[]> {
  if (!db.pgUrl) {
    const conn = new Database(db.dbPath, { readonly: true, fileMustExist: true });
    try {
      return conn.prepare(sql).all(...params) as R[];
    } finally {
      conn.close();
    }
  }
  const client = new pg.Client({ connectionString: db.pgUrl });
  await client.connect();
  try {
    let n = 0;
    return (
      await client.query(
        sql.replace(/\?/g, () => `$${++n}`),
        params,
      )
    ).rows as R[];
  } finally {
    await client.end();
  }
}
