/**
 * When the database cannot take a write (or answer a read) for a reason outside this process: another process holds
 * the lock, the disk is full, the file is read-only, gone or replaced. Such a request is answered 503 with
 * Retry-After (src/http/app.ts), nothing of it written; the store goes on trying with the next request, so once the
 * cause is gone it works again without a restart.
 */

export type UnavailableCause =
  'busy' | 'full' | 'readonly' | 'ioerr' | 'cantopen' | 'corrupt' | 'missing' | 'replaced' | 'closed' | 'unreachable';

/** What the client is told (no paths: the answer is public); the log line says the same with the file. */
const DESCRIPTIONS: Record<UnavailableCause, string> = {
  busy: 'The database is locked by another process',
  full: 'The database cannot be written: the disk is full',
  readonly: 'The database cannot be written: it is read-only',
  ioerr: 'The database cannot be written: input/output error',
  cantopen: 'The database file cannot be opened',
  corrupt: 'The database file is damaged',
  missing: 'The database file was removed from under the server',
  replaced: 'The database file was replaced under the server',
  closed: 'The database is closed (the server is stopping)',
  unreachable: 'The database server cannot be reached',
};

/** Seconds a client should wait before trying again. */
const RETRY_AFTER_S: Record<UnavailableCause, number> = {
  busy: 1,
  full: 10,
  readonly: 10,
  ioerr: 10,
  cantopen: 10,
  corrupt: 60,
  missing: 10,
  replaced: 10,
  closed: 5,
  unreachable: 5,
};

export class StoreUnavailableError extends Error {
  readonly retryAfterSeconds: number;

  constructor(
    readonly reason: UnavailableCause,
    options?: { cause?: unknown },
  ) {
    super(DESCRIPTIONS[reason], options);
    this.name = 'StoreUnavailableError';
    this.retryAfterSeconds = RETRY_AFTER_S[reason];
  }
}

export function describeCause(cause: UnavailableCause): string {
  return DESCRIPTIONS[cause];
}

/** The cause behind an SQLite error (better-sqlite3's `code`, extended codes included), or null for any other error. */
export function unavailableCause(error: unknown): UnavailableCause | null {
  if (error instanceof StoreUnavailableError) return error.reason;
  if (error instanceof TypeError && /database connection is not open/.test(error.message)) return 'closed';
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return null;
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return 'busy';
  if (code === 'SQLITE_FULL') return 'full';
  if (code.startsWith('SQLITE_READONLY')) return 'readonly';
  if (code.startsWith('SQLITE_IOERR')) return 'ioerr';
  if (code.startsWith('SQLITE_CANTOPEN')) return 'cantopen';
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') return 'corrupt';
  return null;
}

/** `error` as a StoreUnavailableError when an outside cause explains it; otherwise unchanged. */
export function asUnavailable(error: unknown): unknown {
  const cause = unavailableCause(error);
  return cause === null || error instanceof StoreUnavailableError
    ? error
    : new StoreUnavailableError(cause, { cause: error });
}
