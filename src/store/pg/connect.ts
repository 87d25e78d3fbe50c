/**
 * Connecting to PostgreSQL with problems an operator fixes said in one line: a URL that is not one, a server that
 * does not answer, a wrong password, a database that does not exist. The password never appears in a message.
 */
import pg from 'pg';

export { checkPgUrl, describePgUrl, isPgUrl, PgConnectError, redactPgUrl } from './url.js';
import { checkPgUrl, describePgUrl, PgConnectError, redactPgUrl } from './url.js';

export interface PgConnectOptions {
  /** how long to wait for the server; default 10 s */
  timeoutMs?: number;
  /** 64-bit integers as BigInt rather than as decimal strings (pg's default) */
  bigints?: boolean;
}

type TypeParser = (value: string) => unknown;

/** pg's parsers, but int8 (bigint) as a BigInt instead of a string. */
function int8AsBigInt(...[oid, format]: Parameters<typeof pg.types.getTypeParser>): TypeParser {
  return oid === pg.types.builtins.INT8
    ? (v: string) => BigInt(v)
    : (pg.types.getTypeParser(oid, format) as TypeParser);
}

/** Client options for `url` (libpq's PG* variables fill in what the URL leaves out, as pg does by itself). */
export function pgClientConfig(url: string, opts: PgConnectOptions = {}): pg.ClientConfig {
  checkPgUrl(url);
  return {
    connectionString: url,
    connectionTimeoutMillis: opts.timeoutMs ?? 10_000,
    ...(opts.bigints
      ? {
          types: {
            getTypeParser: int8AsBigInt,
          },
        }
      : {}),
  };
}

/** A connected client; rejects with a one-line PgConnectError for the problems an operator fixes. */
export async function connectPg(url: string, opts: PgConnectOptions = {}): Promise<pg.Client> {
  const client = new pg.Client(pgClientConfig(url, opts));
  // A server that goes away later emits 'error' on the client; without a listener that would end the process.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => undefined);
    throw explainConnectError(err, url);
  }
  return client;
}

/** The one line that says why a connection to `url` failed. */
export function explainConnectError(err: unknown, url: string): PgConnectError {
  const e = err as { code?: string; message?: string };
  const where = describePgUrl(url);
  let user = '';
  try {
    user = decodeURIComponent(new URL(url).username) || process.env['PGUSER'] || '';
  } catch {
    // not a URL: checkPgUrl said so before we got here
  }
  const message = redactPgUrl(String(e.message ?? err));
  switch (e.code) {
    case '28P01':
      return new PgConnectError(`PostgreSQL at ${where} refused the password of user "${user}"`);
    case '28000':
      return new PgConnectError(`PostgreSQL at ${where} refused the connection: ${message}`);
    case '3D000':
      return new PgConnectError(`PostgreSQL at ${where}: ${message} (create it first: CREATE DATABASE …)`);
    case 'ECONNREFUSED':
      return new PgConnectError(
        `cannot connect to PostgreSQL at ${where}: connection refused (is it running, on that port?)`,
      );
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new PgConnectError(`cannot connect to PostgreSQL at ${where}: unknown host`);
    case 'ETIMEDOUT':
      return new PgConnectError(`cannot connect to PostgreSQL at ${where}: no answer (timed out)`);
    default:
      if (/timeout/i.test(message))
        return new PgConnectError(`cannot connect to PostgreSQL at ${where}: no answer (timed out)`);
      return new PgConnectError(`cannot connect to PostgreSQL at ${where}: ${message}`);
  }
}
