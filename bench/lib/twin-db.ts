import Database from 'better-sqlite3';

/**
 * A bare twin's database (twin-server.ts, twin-push.ts), opened with the pragmas sydent-ts sets
 * (src/store/database.ts), so both write the same way. Imports nothing of sydent-ts, as the twins do not.
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
