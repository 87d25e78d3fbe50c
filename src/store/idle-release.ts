/**
 * Gives an idle store's SQLite memory back to the system.
 *
 * Under load each connection keeps up to `cache_size` of pages in its page cache (anonymous memory: every page it
 * wrote, and in WAL mode every page it read from the WAL), and each page it reads through its mmap of the file stays
 * mapped, with the neighbours the kernel maps around every fault: on a large database the resident set grows towards
 * the file's size for each connection. Both serve speed under load and nothing once the traffic stops, so when
 * neither a read snapshot began nor a write committed for `idleMs`, each connection's mapping is dropped (`mmap_size`
 * set to 0 and back: SQLite maps the file again at its next read, whose pages are still in the kernel's page cache)
 * and its page cache freed (`shrink_memory`).
 */
import type { SqliteDatabase } from './database.js';
import { MMAP_SIZE } from './database.js';

/** How long the store must see no read snapshot and no commit before its connections' memory is given back. */
export const IDLE_RELEASE_MS = 10_000;

export interface IdleReleaseOptions {
  /** default IDLE_RELEASE_MS; tests shorten it */
  idleMs?: number;
  /** before releasing: nothing may hold the connections in a transaction (the read snapshot ends here) */
  beforeRelease: () => void;
  /** after releasing the connections: whatever else holds memory for reads gives it back (the lookup workers) */
  afterRelease?: () => void;
}

export class IdleRelease {
  /** set by every use: the check, every idleMs, needs no clock and a use costs one store */
  private used = false;
  /** nothing to give back since the last release (true at first: nothing is held yet) */
  private released = true;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly connections: readonly SqliteDatabase[],
    private readonly opts: IdleReleaseOptions,
  ) {
    // An interval, not a timer per use: the release comes between one and two idleMs after the last use.
    this.timer = setInterval(() => this.check(), opts.idleMs ?? IDLE_RELEASE_MS);
    this.timer.unref();
  }

  /** A read snapshot began or a write committed. */
  touch(): void {
    this.used = true;
  }

  /** Stops watching (the store is closing). */
  stop(): void {
    clearInterval(this.timer);
  }

  private check(): void {
    if (this.used) {
      this.used = false;
      this.released = false;
      return;
    }
    if (this.released) return;
    this.released = true;
    this.opts.beforeRelease();
    for (const db of this.connections) {
      // A connection in a transaction (none should be, between turns of the event loop) keeps its pages.
      if (!db.open || db.inTransaction) continue;
      db.pragma('mmap_size = 0');
      db.pragma(`mmap_size = ${MMAP_SIZE}`);
      db.pragma('shrink_memory');
    }
    this.opts.afterRelease?.();
  }
}
