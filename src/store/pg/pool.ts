/**
 * The PostgreSQL engine's connections: one pool per node (`[db] db.pool_size`), 64-bit integers read as numbers
 * (ids and ms timestamps stay below 2^53, as in SQLite), and a transaction per write. A failure that says the
 * server is gone, full or refusing becomes StoreUnavailableError (503); the pool drops broken connections and opens
 * new ones with the next request, so the store works again by itself once the server is back.
 */
import pg from 'pg';

import { StoreUnavailableError, type UnavailableCause } from '../unavailable.js';
import { pgClientConfig } from './connect.js';

/** How long a request waits for a free connection (or for a new one to open) before it is answered 503. */
const CONNECT_TIMEOUT_MS = 5000;

type TypeParser = (value: string) => unknown;

/** pg's parsers, but int8 (bigint) as a number: ids and ms timestamps, below 2^53. */
export function int8AsNumber(...[oid, format]: Parameters<typeof pg.types.getTypeParser>): TypeParser {
  return oid === pg.types.builtins.INT8
    ? (v: string) => Number(v)
    : (pg.types.getTypeParser(oid, format) as TypeParser);
}

export function createPgPool(url: string, size: number): pg.Pool {
  const pool = new pg.Pool({
    ...pgClientConfig(url, { timeoutMs: CONNECT_TIMEOUT_MS }),
    max: size,
    types: { getTypeParser: int8AsNumber },
  });
  // An idle connection the server closed emits 'error' on the pool; without a listener that would end the process.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

/** Connection-level SQLSTATE classes and codes: the server is gone or will not take us now. */
const UNREACHABLE_CODES = new Set([
  '57P01',
  '57P02',
  '57P03',
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EPIPE',
  'EHOSTUNREACH',
]);
const UNREACHABLE_MESSAGES =
  /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|not queryable|Connection refused/i;

/** The outside cause of a PostgreSQL failure, or null when it is a fault of the query itself. */
export function pgUnavailableCause(error: unknown): UnavailableCause | null {
  if (error instanceof StoreUnavailableError) return error.reason;
  const e = error as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  const message = typeof e?.message === 'string' ? e.message : '';
  if (/after calling end on the pool/i.test(message)) return 'closed';
  if (UNREACHABLE_CODES.has(code) || code.startsWith('08') || UNREACHABLE_MESSAGES.test(message)) return 'unreachable';
  if (code === '53100') return 'full';
  if (code === '25006') return 'readonly';
  // too many connections, out of memory, a lock or statement timeout: try again shortly
  if (code === '53300' || code === '53200' || code === '55P03' || code === '57014') return 'busy';
  if (code.startsWith('58')) return 'ioerr';
  if (code === 'XX001' || code === 'XX002') return 'corrupt';
  return null;
}

export function asPgUnavailable(error: unknown): unknown {
  const cause = pgUnavailableCause(error);
  return cause === null || error instanceof StoreUnavailableError
    ? error
    : new StoreUnavailableError(cause, { cause: error });
}

export type Sql = Pick<pg.PoolClient, 'query'>;

/**
 * Sends `text` (its `$n` parameters written in as literals) and COMMIT in one message, so that the transaction ends
 * in the server without a round trip to this process between the two (whose event loop may be busy): for a last
 * statement that takes a lock held to the commit. Answers the statement's rows. Nothing may follow it.
 */
export type CommitWith = <R extends pg.QueryResultRow>(text: string, values: readonly unknown[]) => Promise<R[]>;

/** A value as an SQL literal: strings quoted by the driver's escapeLiteral, safe integers, NULL, arrays of those. */
function literal(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  if (typeof v === 'string') return pg.escapeLiteral(v);
  // A negative number in parentheses: after a minus in the text (`n -$1`) its sign would start a comment.
  if (typeof v === 'number' && Number.isSafeInteger(v)) return v < 0 ? `(${v})` : String(v);
  if (Array.isArray(v)) return `ARRAY[${v.map(literal).join(', ')}]`;
  throw new TypeError(`no SQL literal for ${typeof v === 'number' ? String(v) : typeof v}`);
}

/** `text` with each `$n` replaced by the literal of `values[n - 1]` (the simple protocol, which takes several statements, takes no parameters). */
export function withLiterals(text: string, values: readonly unknown[]): string {
  return text.replace(/\$(\d+)/g, (_, n: string) => {
    const i = Number(n) - 1;
    if (i >= values.length) throw new RangeError(`no value for $${n}`);
    return literal(values[i]);
  });
}

/** A connection of the pool, or StoreUnavailableError when none can be had. */
async function connection(pool: pg.Pool): Promise<pg.PoolClient> {
  try {
    return await pool.connect();
  } catch (error) {
    throw asPgUnavailable(error);
  }
}

/**
 * Runs `work` in one transaction on a connection of its own; commits (or lets `work` end it with CommitWith), or
 * rolls back and rethrows. A connection that failed is dropped from the pool rather than handed to the next request.
 */
export async function inTransaction<T>(
  pool: pg.Pool,
  work: (sql: Sql, commitWith: CommitWith) => Promise<T>,
): Promise<T> {
  const client = await connection(pool);
  let broken: Error | undefined;
  let committed = false;
  const commitWith: CommitWith = async <R extends pg.QueryResultRow>(text: string, values: readonly unknown[]) => {
    if (committed) throw new Error('the transaction is committed already');
    const results = (await client.query<R>(`${withLiterals(text, values)};\nCOMMIT`)) as unknown as pg.QueryResult<R>[];
    committed = true;
    return results[0]!.rows;
  };
  try {
    await client.query('BEGIN');
    const result = await work(client, commitWith);
    if (!committed) await client.query('COMMIT');
    return result;
  } catch (error) {
    if (pgUnavailableCause(error) !== null) broken = error as Error;
    await client.query('ROLLBACK').catch(() => {
      broken ??= error as Error;
    });
    throw asPgUnavailable(error);
  } finally {
    client.release(broken);
  }
}

/**
 * One statement, which the server runs as a transaction of its own, on a connection of its own. `beforeSend` runs
 * once the connection is had (a caller that gave up while it waited throws there, and nothing is sent). A named
 * statement is parsed and planned once per connection; each use after that is one round trip.
 */
export async function oneStatement<R extends pg.QueryResultRow>(
  pool: pg.Pool,
  config: pg.QueryConfig,
  beforeSend: () => void,
): Promise<R[]> {
  const client = await connection(pool);
  let broken: Error | undefined;
  try {
    beforeSend();
    return (await client.query<R>(config)).rows;
  } catch (error) {
    if (pgUnavailableCause(error) !== null) broken = error as Error;
    throw asPgUnavailable(error);
  } finally {
    client.release(broken);
  }
}

/** One statement outside a transaction (a read, or a write that is one statement). */
export async function query<R extends pg.QueryResultRow>(
  pool: pg.Pool,
  config: pg.QueryConfig,
): Promise<pg.QueryResult<R>> {
  try {
    return await pool.query<R>(config);
  } catch (error) {
    throw asPgUnavailable(error);
  }
}
