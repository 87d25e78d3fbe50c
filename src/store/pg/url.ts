/**
 * PostgreSQL URLs: checked, described and redacted without loading the driver (the configuration reads them on
 * every start, SQLite's too).
 */

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
