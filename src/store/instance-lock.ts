/**
 * One server per database. A second sydent-ts on the same sydent.db would run its own actors on the same rows
 * (and, when its start fails, used to remove the first one's pid file), so start-up takes this lock before it
 * opens the database, and gives up at once when another process holds it.
 *
 * The lock is SQLite's own exclusive lock on a small file beside the database (`<db.file>.lock`): a kernel
 * (fcntl) lock, so it goes with the process however it ends, and a leftover file never blocks the next start.
 * The file is left in place on shutdown: removing a lock file races a starting instance that has just opened it.
 */
import { readFileSync, statSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { StartupError } from '../startup-error.js';

interface InstanceLock {
  readonly path: string;
  release(): void;
}

/**
 * Takes the lock for `dbFile`; `pidFile` (when set) only serves to name the running instance's pid in the
 * refusal. Throws a StartupError when another process (or another server in this one) holds it.
 */
export function acquireInstanceLock(dbFile: string, pidFile?: string): InstanceLock {
  // The first thing to touch the database's directory, so the one to say it is not there: a mistyped db.file
  // must not become a new directory holding a new, empty database that the server then runs on.
  const dir = dirname(dbFile);
  if (!isDirectory(dir))
    throw new StartupError(
      `the directory ${dir} of [db] db.file (${dbFile}) does not exist; sydent-ts does not create it`,
    );
  const path = `${dbFile}.lock`;
  const db = new Database(path);
  try {
    db.pragma('busy_timeout = 0');
    db.pragma('journal_mode = OFF');
    // In exclusive locking mode the lock taken by the first write is held until the connection closes.
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL)');
    db.exec('BEGIN EXCLUSIVE');
    db.prepare('DELETE FROM holder').run();
    db.prepare('INSERT INTO holder (pid) VALUES (?)').run(process.pid);
    db.exec('COMMIT');
  } catch (err) {
    db.close();
    if ((err as { code?: string }).code?.startsWith('SQLITE_BUSY')) {
      const pid = pidFile ? readPid(pidFile) : undefined;
      const who = pid ? `another sydent-ts (pid ${pid}, from ${pidFile})` : 'another sydent-ts';
      throw new StartupError(`${who} is running on ${dbFile} ([db] db.file): stop it first`);
    }
    throw err;
  }
  let released = false;
  return {
    path,
    release() {
      if (released) return;
      released = true;
      db.close();
    },
  };
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function readPid(pidFile: string): number | undefined {
  try {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
