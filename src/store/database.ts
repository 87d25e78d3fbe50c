/**
 * Opening and closing the SQLite database (Sydent's `sydent.db`, used as is).
 */
import Database from 'better-sqlite3';

import { createPrivateFile } from '../util/private-file.js';
import { migrate, OUR_MIGRATIONS, type Migration } from './migrations.js';

export type SqliteDatabase = Database.Database;

interface OpenDatabaseOptions {
  /** Our migrations to apply; tests inject their own. */
  migrations?: readonly Migration[];
}

/** Each connection's mmap of the file (bytes); src/store/idle-release.ts unmaps it while the store is idle. */
export const MMAP_SIZE = 1073741824;

export function isMemoryPath(path: string): boolean {
  return path === '' || path === ':memory:';
}

/**
 * Opens (creating the file if needed, never its directory: a missing one is a mistyped path) and migrates the
 * database. Throws, with the handle closed, when the file cannot be opened or its schema cannot be brought up to
 * date (e.g. it is newer than this code).
 */
export function openDatabase(path: string, options: OpenDatabaseOptions = {}): SqliteDatabase {
  if (!isMemoryPath(path)) {
    // It holds the pepper, account tokens and 3PID addresses: a new file is the owner's alone (SQLite would make
    // it 0644). SQLite gives its -wal and -shm files the database file's mode, so they follow.
    createPrivateFile(path);
  }

  const db = new Database(path);
  try {
    // WAL lets readers proceed while a write commits, and survives a Sydent round trip: Sydent's
    // sqlite3 opens WAL databases fine. The mode is persistent in the file, so it is set once here.
    db.pragma('journal_mode = WAL');
    // In WAL mode, NORMAL only skips the fsync at each commit, not the WAL's own ordering: a crash of
    // this process loses nothing (the WAL is in the OS cache), and only a power loss or kernel crash
    // can roll back the last few commits, never corrupt the file. Worth it for commit latency.
    db.pragma('synchronous = NORMAL');
    // While migrating at start-up, a second process (a Sydent CLI, the sqlite3 shell) holding the write lock is
    // waited for. The store lowers this to zero once open: a running server waits off the event loop
    // (group-commit.ts).
    db.pragma('busy_timeout = 5000');
    // Sydent declares threepid_token_auths.validationSession as referencing threepid_validations, a
    // table that has never existed; enforcing foreign keys would reject every token insert.
    db.pragma('foreign_keys = OFF');
    // Reads go through the mmap (lookups, on the read connection, read random pages of the association indexes);
    // the page cache holds what a write transaction reads (SQLite copies those pages in rather than use the map)
    // and writes. 16 MB keeps every interior page of million-row tables; a larger cache measured no faster on
    // writes, and what it held stays in the process's heap after SQLite frees it. Both are per connection.
    db.pragma('cache_size = -16384');
    db.pragma(`mmap_size = ${MMAP_SIZE}`);

    migrate(db, options.migrations ?? OUR_MIGRATIONS);
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

/** Closes the database; a no-op on an already closed handle so shutdown paths can call it freely. */
export function closeDatabase(db: SqliteDatabase): void {
  if (!db.open) return;
  // No `PRAGMA optimize` here: it adds sqlite_stat tables, and a sydent.db should stay as Sydent knows it.
  db.close();
}
