/**
 * WAL checkpoints on a thread of their own.
 *
 * SQLite's automatic checkpoint runs in the connection that commits, right after the commit: copying the WAL back
 * into the database file and syncing both, on the event loop, for as long as the disk takes. A commit of thousands of
 * rows (a replication push) leaves thousands of pages to copy, and every request waits meanwhile. So the write
 * connection's automatic checkpoint is off, and after each commit the store looks at how many frames of the WAL are
 * not yet in the database file; at CHECKPOINT_FRAMES or more (SQLite's own default threshold) a worker thread with a
 * connection of its own runs a RESTART checkpoint. It holds off the writer while it copies (a write meanwhile is
 * retried by the group commit, off the event loop) and then waits for readers to leave the old WAL, so that the
 * writer starts the WAL again from its beginning, as after its own checkpoints: the WAL stays within a commit or two.
 * (A PASSIVE one, blocking nobody, keeps up with steady writes but never lets the WAL start again: it grows without
 * end.)
 *
 * The count comes from the wal-index (the `-shm` file every connection to the database shares; its layout is part of
 * SQLite's file format, https://www.sqlite.org/walformat.html): `mxFrame`, the last valid frame, and `nBackfill`, the
 * frames already copied. One read of its first 100 bytes per commit. Whenever that cannot be read, or the worker
 * fails, the write connection checkpoints as SQLite does by default again.
 *
 * The worker starts on first need and ends when the store is idle (idle-release.ts) or closes.
 */
import { createRequire } from 'node:module';
import fs from 'node:fs';
import { endianness } from 'node:os';
import { Worker } from 'node:worker_threads';

import type { SqliteDatabase } from './database.js';

/** Frames not yet copied into the database file that make a checkpoint worth running (SQLite's default). */
export const CHECKPOINT_FRAMES = 1000;

/** Offsets in the wal-index: the first copy of its header, then the checkpoint information after the second copy. */
const MX_FRAME_OFFSET = 16;
const N_BACKFILL_OFFSET = 96;
const HEADER_BYTES = 100;
/** The wal-index is in the machine's own byte order. */
const LITTLE_ENDIAN = endianness() === 'LE';

/**
 * How long the checkpoint waits for the writer's transaction under way, and then for readers of the old WAL while
 * writes wait; past it, it ends having copied what it could, and the next commit asks again.
 */
const WORKER_BUSY_TIMEOUT_MS = 250;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.path, { fileMustExist: true });
// The checkpoint reads frames and writes pages through the file, not through a cache or a mapping of its own.
db.pragma('cache_size = -256');
db.pragma('mmap_size = 0');
db.pragma('busy_timeout = ${WORKER_BUSY_TIMEOUT_MS}');
parentPort.on('message', () => {
  try {
    const [result] = db.pragma('wal_checkpoint(RESTART)');
    parentPort.postMessage({ done: true, result });
  } catch (error) {
    parentPort.postMessage({ done: false, error: String(error && error.message) });
  }
});
`;

interface Answer {
  done: boolean;
  error?: string;
}

export interface CheckpointerOptions {
  /** told once when checkpoints go back to the write connection (the worker failed, or the wal-index is unreadable) */
  onFallback?: (reason: string) => void;
}

export class Checkpointer {
  private worker: Worker | null = null;
  /** a checkpoint asked for and not answered yet */
  private running = false;
  private fallenBack = false;
  private closed = false;
  private shm: number | null = null;
  private readonly header = Buffer.alloc(HEADER_BYTES);

  constructor(
    private readonly db: SqliteDatabase,
    private readonly path: string,
    private readonly opts: CheckpointerOptions = {},
  ) {
    db.pragma('wal_autocheckpoint = 0');
  }

  /** After every commit of the write connection: a checkpoint is asked for when the WAL has enough to copy. */
  committed(): void {
    if (this.running || this.fallenBack || this.closed) return;
    const pending = this.pendingFrames();
    if (pending === null) return this.fallBack('the wal-index cannot be read');
    if (pending < CHECKPOINT_FRAMES) return;
    this.running = true;
    this.workerNow().postMessage(null);
  }

  /** Ends the worker while nothing is being copied (the store is idle); the next checkpoint starts another. */
  release(): void {
    if (this.running || !this.worker) return;
    const w = this.worker;
    this.worker = null;
    void w.terminate();
  }

  /** Ends the worker; a checkpoint under way is abandoned (the write connection's close checkpoints). */
  async close(): Promise<void> {
    this.closed = true;
    this.closeShm();
    const w = this.worker;
    this.worker = null;
    await w?.terminate();
  }

  /** Frames of the WAL not yet in the database file, or null when the wal-index cannot be read. */
  private pendingFrames(): number | null {
    try {
      this.shm ??= fs.openSync(`${this.path}-shm`, 'r');
      if (fs.readSync(this.shm, this.header, 0, HEADER_BYTES, 0) < HEADER_BYTES) return null;
    } catch {
      this.closeShm();
      return null;
    }
    const read = (at: number) => (LITTLE_ENDIAN ? this.header.readUInt32LE(at) : this.header.readUInt32BE(at));
    const mxFrame = read(MX_FRAME_OFFSET);
    const nBackfill = read(N_BACKFILL_OFFSET);
    return Math.max(0, mxFrame - nBackfill);
  }

  private workerNow(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { driver: createRequire(import.meta.url).resolve('better-sqlite3'), path: this.path },
    });
    w.unref();
    w.on('message', (answer: Answer) => {
      this.running = false;
      if (!answer.done) this.fallBack(`the checkpoint failed: ${answer.error}`);
    });
    const died = (reason: string) => {
      if (this.worker !== w) return;
      this.worker = null;
      this.running = false;
      if (!this.closed) this.fallBack(reason);
    };
    w.on('error', (error) => died(`the checkpoint thread failed: ${error.message}`));
    w.on('exit', (code) => died(`the checkpoint thread exited (code ${code})`));
    this.worker = w;
    return w;
  }

  private fallBack(reason: string): void {
    if (this.fallenBack || this.closed) return;
    this.fallenBack = true;
    this.closeShm();
    if (this.db.open) this.db.pragma(`wal_autocheckpoint = ${CHECKPOINT_FRAMES}`);
    this.opts.onFallback?.(reason);
  }

  private closeShm(): void {
    if (this.shm === null) return;
    try {
      fs.closeSync(this.shm);
    } catch {
      // already closed
    }
    this.shm = null;
  }
}
