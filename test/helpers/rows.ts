/**
 * Reading rows in tests: a query on a server's database from a connection of its own, opened and closed per call (a
 * test sees what another process would). SQLite: a read-only connection to the file (WAL lets it read beside the
 * running server). PostgreSQL (a server started with db.engine = postgresql): `psql`, synchronously like SQLite's
 * reads, the `?` parameters written in as literals, and the column names PostgreSQL folds to lower case given back
 * the case SQLite's schema declares, so a test's expectations hold on both engines.
 *
 *   rows(t, 'SELECT * FROM local_threepid_associations WHERE address = ?', address)
 *   row<{ lookup_pepper: string }>(path.join(dir, 'sydent.db'), 'SELECT lookup_pepper FROM hashing_metadata')
 */
import { execFileSync } from 'node:child_process';
import Database from 'better-sqlite3';

/** A test server (its database) or the path of a database file. */
export type RowSource = string | { config: { db: { dbFile: string; engine?: string; url?: string | null } } };

const fileOf = (source: RowSource): string => (typeof source === 'string' ? source : source.config.db.dbFile);

/**
 * The database behind each `db.file` path of a test server running on PostgreSQL (the path names no file then), so
 * that helpers given the path read the server's database.
 */
const pgByFile = new Map<string, string>();

export function registerPgDatabase(dbFile: string, url: string): void {
  pgByFile.set(dbFile, url);
}

/** The PostgreSQL URL of a server running on PostgreSQL, else null. */
export function pgUrlOf(source: RowSource): string | null {
  if (typeof source === 'string') return pgByFile.get(source) ?? null;
  return source.config.db.engine === 'postgresql'
    ? (source.config.db.url ?? null)
    : (pgByFile.get(source.config.db.dbFile) ?? null);
}

/** Every row of `sql`. */
export function rows<T = Record<string, unknown>>(source: RowSource, sql: string, ...params: unknown[]): T[] {
  const url = pgUrlOf(source);
  if (url) return pgRows<T>(url, sql, params);
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

/** SQLite's declared names of the mixed-case columns (Sydent's schema). */
const MIXED_CASE = new Map(
  [
    'clientSecret',
    'validationSession',
    'sendAttemptNumber',
    'notBefore',
    'notAfter',
    'originServer',
    'originId',
    'sgAssoc',
    'lastSentVersion',
    'lastPokeSucceededAt',
  ].map((name) => [name.toLowerCase(), name]),
);

function literal(value: unknown): string {
  if (value === null || value === undefined) return 'NULL';
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  if (typeof value === 'boolean') return value ? '1' : '0';
  if (typeof value === 'string') return `'${value.replace(/'/g, "''")}'`;
  if (Buffer.isBuffer(value)) return `'\\x${value.toString('hex')}'`;
  throw new Error(`rows.ts: no SQL literal for a parameter of type ${typeof value}`);
}

/** `sql` with each `?` outside a quoted string replaced by its parameter as a literal. */
export function inlineParams(sql: string, params: readonly unknown[]): string {
  let out = '';
  let next = 0;
  let quote: string | null = null;
  for (const ch of sql) {
    if (quote) {
      if (ch === quote) quote = null;
      out += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      out += ch;
    } else if (ch === '?') {
      if (next >= params.length) throw new Error(`not enough parameters for: ${sql}`);
      out += literal(params[next++]);
    } else {
      out += ch;
    }
  }
  if (next !== params.length) throw new Error(`${params.length} parameters for ${next} placeholders in: ${sql}`);
  return out;
}

/** Runs `sql` on `url` with psql; answers its output (rows of one text column, one per line). */
export function psql(url: string, sql: string): string {
  return execFileSync('psql', [url, '-XAtq', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    // a test may read thousands of rows at once
    maxBuffer: 256 * 1024 * 1024,
  });
}

/** `sql` as one JSON array of its rows: bigints come back as numbers, as better-sqlite3 gives them. */
const asJsonRows = (sql: string, params: readonly unknown[]): string =>
  `SELECT coalesce(json_agg(q), '[]') AS rows FROM (${inlineParams(sql, params)}) q`;

function sqliteNames<T>(parsed: Record<string, unknown>[]): T[] {
  return parsed.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [MIXED_CASE.get(k) ?? k, v]))) as T[];
}

function pgRows<T>(url: string, sql: string, params: readonly unknown[]): T[] {
  return sqliteNames<T>(JSON.parse(psql(url, asJsonRows(sql, params))) as Record<string, unknown>[]);
}

/**
 * A connection of the test's own to a server's database, kept open while a test polls it (vi.waitFor): each read
 * costs a query, not a new connection (or, on PostgreSQL, a psql process). SQLite: read-only, beside the server.
 */
export interface RowReader {
  rows<T = Record<string, unknown>>(sql: string, ...params: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

export async function openRowReader(source: RowSource): Promise<RowReader> {
  const url = pgUrlOf(source);
  if (url) {
    // pg is loaded only by tests on PostgreSQL.
    const { connect } = await import('./postgres.js');
    const client = await connect(url);
    // The database dropped under it ends the connection: its queries fail, the process does not.
    client.on('error', () => undefined);
    return {
      rows: async <T>(sql: string, ...params: unknown[]) =>
        sqliteNames<T>(
          (await client.query<{ rows: Record<string, unknown>[] }>(asJsonRows(sql, params))).rows[0]!.rows,
        ),
      close: () => client.end(),
    };
  }
  const db = new Database(fileOf(source), { readonly: true, fileMustExist: true });
  return {
    rows: <T>(sql: string, ...params: unknown[]) => Promise.resolve(db.prepare(sql).all(...params) as T[]),
    close: () => {
      db.close();
      return Promise.resolve();
    },
  };
}
