import Database from 'better-sqlite3';

/**
 * A bare twin's database (twin-server.ts, twin-push.ts), opened with the pragmas sydent-ts sets (src/store/database.ts)
 * but for a page cache four times the size: a twin answers to no memory goal, so it takes the cache a bare stack
 * would. Imports nothing of sydent-ts, as the twins do not.
 */
export function openTwinDb(file: string): Database.Database {
  const db = new Database(file, { fileMustExist: true });
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.pragma('foreign_keys = OFF');
  db.pragma('cache_size = -65536');
  db.pragma('mmap_size = 1073741824');
  return db;
}

/** On SIGTERM or SIGINT: the server closed, then the database, then exit (1 if the server could not close). */
export function closeOnSignal(server: { close(): Promise<unknown> }, db: Database.Database): void {
  const stop = () => {
    server.close().then(
      () => {
        db.close();
        process.exit(0);
      },
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
