/**
 * Large databases built once per bench process and copied per scenario: the first scenario that asks pays for the
 * build, every later one gets a fresh copy of the untouched file, whatever the one before it wrote. The files live
 * in a temp directory removed when the process exits (or is interrupted).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import type { SqliteDatabase } from '../../src/store/database.js';

let dir: string | null = null;

/** The bench process's cache directory (made on first use, removed at exit). */
export function cacheDir(): string {
  if (dir) return dir;
  const made = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-bench-cache-'));
  dir = made;
  const remove = () => fs.rmSync(made, { recursive: true, force: true });
  process.once('exit', remove);
  // an interrupted run leaves no gigabyte file behind: remove, then die of the signal as before
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      remove();
      process.kill(process.pid, signal);
    });
  }
  return made;
}

/**
 * Writes a file's dirty pages out now. Left to the kernel, a fresh copy of hundreds of megabytes is written back
 * about 30 s later (vm.dirty_expire_centisecs), in the middle of whatever is measured then. Written here it costs
 * the setup 0.4–2 s per copy, outside every measurement.
 */
export function flushToDisk(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Indexes of a table as created by the migrations (name, SQL), to drop before a bulk insert and recreate after. */
export function tableIndexes(db: SqliteDatabase, table: string): Array<{ name: string; sql: string }> {
  return db
    .prepare(`SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL`)
    .all(table) as Array<{ name: string; sql: string }>;
}

/** `INSERT … VALUES (?,…),(?,…)…`: `rows` tuples of `cols` placeholders. */
export function valuesSql(rows: number, cols: number): string {
  return Array.from({ length: rows }, () => `(${'?,'.repeat(cols - 1)}?)`).join(',');
}

export interface Built<T> {
  file: string;
  info: T;
  /** seconds the build took */
  buildS: number;
}

const builds = new Map<string, Promise<Built<unknown>>>();

/** Whether `key` was built (or is being built) in this process. */
export const isBuilt = (key: string): boolean => builds.has(key);

/**
 * The file for `key`, built by `build(file)` on the first call (which writes it, then it is flushed to disk). A
 * failed build is not kept: the next caller tries again and reports its own failure.
 */
export function buildOnce<T>(key: string, build: (file: string) => T | Promise<T>): Promise<Built<T>> {
  let built = builds.get(key) as Promise<Built<T>> | undefined;
  if (!built) {
    built = (async () => {
      const file = path.join(cacheDir(), `${key.replace(/[^\w.+-]/g, '_')}.db`);
      const started = performance.now();
      fs.rmSync(file, { force: true }); // what a failed attempt left
      const info = await build(file);
      flushToDisk(file);
      return { file, info, buildS: (performance.now() - started) / 1000 };
    })();
    built.catch(() => builds.delete(key));
    builds.set(key, built);
  }
  return built;
}

/** Copies a cached file to `dbPath` (which must not exist yet) and flushes the copy; seconds and bytes. */
export function copyCached(file: string, dbPath: string): { copyS: number; bytes: number } {
  const started = performance.now();
  fs.mkdirSync(path.dirname(dbPath), { recursive: true });
  // a copy-on-write clone where the file system has them, a plain copy elsewhere
  fs.copyFileSync(file, dbPath, fs.constants.COPYFILE_EXCL | fs.constants.COPYFILE_FICLONE);
  flushToDisk(dbPath);
  return { copyS: (performance.now() - started) / 1000, bytes: fs.statSync(dbPath).size };
}
