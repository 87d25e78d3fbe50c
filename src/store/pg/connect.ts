/**
 * Connecting to PostgreSQL with problems an operator fixes said in one line: a URL that is not one, a server that
 * does not answer, a wrong password, a database that does not exist. The password never appears in a message.
 */
import pg from 'pg';

/** A connection problem, its message fit to print as is. */
export class PgConnectError extends Error {
  override readonly name = 'PgConnectError';
}

const PROTOCOLS = new Set(['postgres:', 'postgresql:']);

/** True for a `postgresql://` (or `postgres://`) URL. */
export function isPgUrl(value: string): boolean {
  return /^postgres(ql)?:\/\//i.test(value);
}

/** Checks a PostgreSQL URL; throws PgConnectError (without the password) when it is not one. */
export function checkPgUrl(url: string): URL {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new PgConnectError(
      `not a PostgreSQL URL: ${redactPgUrl(url)} (expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE)`,
    );
  }
  if (!PROTOCOLS.has(parsed.protocol.toLowerCase())) {
    throw new PgConnectError(
      `not a PostgreSQL URL: ${redactPgUrl(url)} (expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE)`,
    );
  }
  if (parsed.port && !(Number(parsed.port) > 0 && Number(parsed.port) < 65536)) {
    throw new PgConnectError(`not a PostgreSQL URL: ${redactPgUrl(url)} (port ${parsed.port})`);
  }
  return parsed;
}

/** The URL with its password replaced by `***`, for messages. Works on text that is not a valid URL too. */
export function redactPgUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/?#@]*):[^@/?#]*@/i, '$1:***@');
}

/** `host:port/database` of a URL, for messages. */
export function describePgUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname || process.env['PGHOST'] || 'localhost'}:${u.port || process.env['PGPORT'] || '5432'}${u.pathname || '/'}`;
  } catch {
    return redactPgUrl(url);
  }
}

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
