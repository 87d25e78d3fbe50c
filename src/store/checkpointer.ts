/**
 * WAL checkpoints on a thread of their own.
 *
 * SQLite's automatic checkpoint runs in the connection that commits, right after the commit: copying the WAL back
 * into the database file and syncing both, on the event loop, for as long as the disk takes. A commit of thousands of
 * rows (a replication push) leaves thousands of pages to copy, and every request waits meanwhile. So the write
 * connection's automatic checkpoint is off, and after each commit the store looks at how many frames of the WAL are
 * not yet in the database file; at CHECKPOINT_FRAMES or more (SQLite's own default threshold) a worker thread with a
 * connection of its own runs a checkpoint:
 *
 * - PASSIVE as a rule: it copies what no reader still needs and blocks nobody, so writes go on meanwhile, and
 *   an outside reader (an operator's backup, the sqlite3 shell) holds up no write. The writer starts the WAL again
 *   from its beginning by itself once everything is copied and no reader is in the WAL.
 * - RESTART when the WAL has reached RESTART_FRAMES anyway (steady readers kept the writer from starting it
 *   again): it holds off the writer (a write meanwhile is retried by the group commit, off the event loop) while it
 *   copies and waits for readers to leave the old WAL, up to WORKER_BUSY_TIMEOUT_MS. If a reader stays (a long
 *   one from outside), the next RESTART waits RESTART_BACKOFF_MS, so such a reader delays writes once in that time
 *   and not at every checkpoint.
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
/** A WAL this long (about 40 MB in 4 KiB pages) did not start again by itself: the writer is held off to do it. */
export const RESTART_FRAMES = 10_000;
/** After a RESTART that a reader outlasted, the next waits this long. */
export const RESTART_BACKOFF_MS = 30_000;

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
parentPort.on('message', (mode) => {
  try {
    const [result] = db.pragma(mode === 'RESTART' ? 'wal_checkpoint(RESTART)' : 'wal_checkpoint(PASSIVE)');
    parentPort.postMessage({ done: true, mode, result });
  } catch (error) {
    parentPort.postMessage({ done: false, error: String(error && error.message) });
  }
});
`;

export type CheckpointMode = 'PASSIVE' | 'RESTART';

interface Answer {
  done: boolean;
  mode?: CheckpointMode;
  /** `wal_checkpoint`'s row: busy is 1 when it could not finish (a reader, or for PASSIVE the writer) */
  result?: { busy: number; log: number; checkpointed: number };
  error?: string;
}

export interface CheckpointerOptions {
  /** told once when checkpoints go back to the write connection (the worker failed, or the wal-index is unreadable) */
  onFallback?: (reason: string) => void;
  /** told of each checkpoint the thread ran (tests) */
  onCheckpoint?: (mode: CheckpointMode, result: { busy: number; log: number; checkpointed: number }) => void;
  /** RESTART_FRAMES unless told (tests) */
  restartFrames?: number;
  now?: () => number;
}

export class Checkpointer {
  private worker: Worker | null = null;
  /** a checkpoint asked for and not answered yet */
  private running = false;
  private fallenBack = false;
  private closed = false;
  private shm: number | null = null;
  private readonly header = Buffer.alloc(HEADER_BYTES);
  /** no RESTART before this time (a reader outlasted the last one) */
  private restartNotBefore = 0;
  /** frames left to copy that ask for the next PASSIVE: more once a PASSIVE could copy nothing (readers) */
  private passiveAt = CHECKPOINT_FRAMES;

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
    const wal = this.walFrames();
    if (wal === null) return this.fallBack('the wal-index cannot be read');
    const pending = wal.mxFrame - wal.nBackfill;
    let mode: CheckpointMode;
    const restartAt = this.opts.restartFrames ?? RESTART_FRAMES;
    if (wal.mxFrame >= restartAt && pending > 0 && this.now() >= this.restartNotBefore) mode = 'RESTART';
    else if (pending >= this.passiveAt) mode = 'PASSIVE';
    else {
      // the writer started the WAL again, or a reader left: back to the usual threshold
      if (pending < CHECKPOINT_FRAMES) this.passiveAt = CHECKPOINT_FRAMES;
      return;
    }
    this.running = true;
    this.workerNow().postMessage(mode);
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  private checkpointed(mode: CheckpointMode, result: { busy: number; log: number; checkpointed: number }): void {
    this.opts.onCheckpoint?.(mode, result);
    if (mode === 'RESTART') {
      if (result.busy) this.restartNotBefore = this.now() + RESTART_BACKOFF_MS;
      return;
    }
    // A reader holds frames back: no point copying again before another CHECKPOINT_FRAMES have come.
    const left = result.log - result.checkpointed;
    this.passiveAt = left >= CHECKPOINT_FRAMES ? left + CHECKPOINT_FRAMES : CHECKPOINT_FRAMES;
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

  /** The WAL's last valid frame and the frames already copied, or null when the wal-index cannot be read. */
  private walFrames(): { mxFrame: number; nBackfill: number } | null {
    try {
      this.shm ??= fs.openSync(`${this.path}-shm`, 'r');
      if (fs.readSync(this.shm, this.header, 0, HEADER_BYTES, 0) < HEADER_BYTES) return null;
    } catch {
      this.closeShm();
      return null;
    }
    const read = (at: number) => (LITTLE_ENDIAN ? this.header.readUInt32LE(at) : this.header.readUInt32BE(at));
    const mxFrame = read(MX_FRAME_OFFSET);
    return { mxFrame, nBackfill: Math.min(mxFrame, read(N_BACKFILL_OFFSET)) };
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
      else if (answer.mode && answer.result) this.checkpointed(answer.mode, answer.result);
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
