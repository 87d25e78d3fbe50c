/**
 * The store's read-only connection (every read of the read facade, src/store/reads.ts), and the read snapshot its
 * reads share.
 *
 * On a WAL database every statement outside a transaction opens and closes a read transaction of its own, and each
 * of those takes and drops a lock on the `-shm` file (two `fcntl` calls) and stats the database file: for a
 * one-hash lookup that is half the SQLite time. Here reads share one read transaction instead, a snapshot that
 * lives at most SNAPSHOT_MS: it begins at the first read and ends on a timer, so under load one snapshot serves
 * every lookup of those milliseconds, and when reads stop it does not outlive them (an open snapshot would keep
 * the WAL from being restarted by a checkpoint).
 *
 * A snapshot must never hide a committed write of this process from a later read. Those writes all go through the
 * store supervisor, which ends the snapshot after each commit (`ReadSnapshot.end`), before any writer is answered,
 * so a read that follows a write, even in the same turn of the event loop, starts a new snapshot. A write from another process (a CLI, another node) is
 * seen within SNAPSHOT_MS, as by a read that began that long before the write committed.
 *
 * A separate connection, because a transaction on the writer's connection would swallow the store's own
 * transactions (better-sqlite3 nests them as savepoints, committed only when the snapshot ends).
 */
import Database from 'better-sqlite3';

import { isMemoryPath, MMAP_SIZE, type SqliteDatabase } from './database.js';

/** The longest a read may wait for a lock (milliseconds). */
const READ_BUSY_TIMEOUT_MS = 10;

/** The settings of every read-only connection (this one, and the lookup workers' of lookup-pool.ts). */
export const LOOKUP_CONNECTION_PRAGMAS: readonly string[] = [
  // Reads only: a bug that wrote here would bypass the store supervisor's one-writer rule.
  'query_only = ON',
  // In WAL mode a read waits for no writer; only a checkpoint or recovery by another process can hold it up, and
  // then briefly: the event loop must never wait longer than this on a lock.
  `busy_timeout = ${READ_BUSY_TIMEOUT_MS}`,
  // The index pages of a large lookup stay in memory; the mmap as the writer's (see openDatabase).
  'cache_size = -65536',
  `mmap_size = ${MMAP_SIZE}`,
];

/**
 * Opens a second connection to an already opened (and migrated) database file for reads only. `null` for an
 * in-memory database, which a second connection would not see: its reads stay on the writer's connection.
 */
export function openLookupConnection(path: string): SqliteDatabase | null {
  if (isMemoryPath(path)) return null;
  const db = new Database(path, { fileMustExist: true });
  try {
    for (const pragma of LOOKUP_CONNECTION_PRAGMAS) db.pragma(pragma);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

/** How long one read snapshot may serve reads. */
export const SNAPSHOT_MS = 5;

/** A read transaction shared by the reads of a few milliseconds on a read-only connection (see above). */
export class ReadSnapshot {
  private readonly begin: Database.Statement;
  private readonly commit: Database.Statement;
  private open = false;
  /** bound once: scheduling it costs no closure per snapshot */
  private readonly expire = (): void => this.end();

  /** `onBegin`: called as each snapshot begins (the store's idle release counts it as a use) */
  constructor(
    private readonly db: SqliteDatabase,
    private readonly onBegin?: () => void,
  ) {
    this.begin = db.prepare('BEGIN');
    this.commit = db.prepare('COMMIT');
  }

  /** Before a read: joins the current snapshot, beginning one if none is open. */
  enter(): void {
    if (this.open) return;
    this.begin.run();
    this.open = true;
    this.onBegin?.();
    // An early end (a write) leaves this timer to end a later snapshot early: harmless, a snapshot may be shorter.
    setTimeout(this.expire, SNAPSHOT_MS).unref();
  }

  /** Ends the snapshot (if one is open): the next read sees every write committed until now. */
  end(): void {
    if (!this.open) return;
    this.open = false;
    if (this.db.open && this.db.inTransaction) this.commit.run();
  }
}
