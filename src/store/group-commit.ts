/**
 * Group commit: the writes that arrive in one turn of the event loop run in one transaction, each in a savepoint of
 * its own (one that fails is rolled back alone, the others commit), and every caller is answered after the commit.
 * One commit (and one WAL append) serves many requests.
 *
 * The event loop never waits on a lock: the write connection's busy timeout is zero, so when another process holds
 * the write lock `BEGIN IMMEDIATE` fails at once and the batch is tried again a little later (on a timer, the loop
 * free meanwhile), until each request's deadline; a request whose deadline passes first is answered with
 * StoreUnavailableError (503 with Retry-After). A disk that is full, a read-only file, an I/O error, or a database
 * file removed or replaced under us fail the whole batch the same way, rolled back: nothing half-written. Each next
 * batch tries again, so writes work again as soon as the cause is gone.
 */
import type Database from 'better-sqlite3';
import type { DatabaseFile, StoreHealth } from './health.js';
import { StoreUnavailableError, unavailableCause, type UnavailableCause } from './unavailable.js';

/**
 * Whether the caller still waits: the store supervisor passes the ask's RequestContext (src/actors/request-context.ts),
 * which answers without making an AbortSignal; an AbortSignal answers too.
 */
export interface CallerCancellation {
  readonly aborted: boolean;
  readonly reason: unknown;
  throwIfAborted(): void;
}

/** When the caller needs its answer, and its cancellation. */
export interface WriteRequest {
  deadline: number;
  cancel?: CallerCancellation;
}

interface Entry {
  work: () => unknown;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  deadline: number;
  cancel: CallerCancellation | undefined;
}

type Outcome = { ok: true; value: unknown } | { ok: false; error: unknown };

/** The first wait after a locked database, doubled up to the last. */
const RETRY_FIRST_MS = 5;
const RETRY_MAX_MS = 100;

interface GroupCommitOptions {
  file: DatabaseFile;
  health: StoreHealth;
  /** after every commit, before any caller hears of it (the read snapshot ends here) */
  afterCommit?: () => void;
}

export class GroupCommitter {
  private queue: Entry[] = [];
  private immediate: NodeJS.Immediate | null = null;
  private timer: NodeJS.Timeout | null = null;
  /** the wait before the next try while the database is locked; 0 when it is not */
  private retryMs = 0;
  private closed = false;
  private readonly begin: Database.Statement;
  private readonly commit: Database.Statement;
  private readonly rollback: Database.Statement;
  private readonly inSavepoint: (work: () => unknown) => unknown;
  private readonly flush = (): void => this.run();

  constructor(
    private readonly db: Database.Database,
    private readonly opts: GroupCommitOptions,
  ) {
    this.begin = db.prepare('BEGIN IMMEDIATE');
    this.commit = db.prepare('COMMIT');
    this.rollback = db.prepare('ROLLBACK');
    // Called inside the batch's transaction, better-sqlite3 makes this a savepoint.
    this.inSavepoint = db.transaction((work: () => unknown) => work());
  }

  /** Runs `work` (synchronous SQL on the write connection) in the next batch; resolves after its commit. */
  submit<T>(work: () => T, request: WriteRequest): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ work, resolve, reject, deadline: request.deadline, cancel: request.cancel });
      // While the database is locked the retry timer takes the new ones too.
      if (this.immediate === null && this.timer === null) this.immediate = setImmediate(this.flush);
    });
  }

  /** Pending writes are refused (the store is closing): they were not written. */
  close(): void {
    this.closed = true;
    if (this.immediate) clearImmediate(this.immediate);
    if (this.timer) clearTimeout(this.timer);
    this.immediate = this.timer = null;
    const left = this.queue;
    this.queue = [];
    for (const e of left) e.reject(new StoreUnavailableError('closed'));
  }

  private run(): void {
    this.immediate = this.timer = null;
    const batch = this.take();
    if (batch.length === 0) {
      this.retryMs = 0;
      return;
    }
    const problem = this.opts.file.problem();
    if (problem) {
      this.fail(batch, problem);
      return;
    }
    let outcomes: Outcome[];
    try {
      outcomes = this.transaction(batch);
    } catch (error) {
      const cause = unavailableCause(error);
      if (cause === 'busy') {
        this.queue = batch.concat(this.queue);
        this.retryLater();
      } else if (cause !== null) {
        this.fail(batch, cause, error);
      } else {
        // Not the database's state: a fault every writer of this batch hears of (none of it was committed).
        this.retryMs = 0;
        for (const e of batch) e.reject(error);
      }
      return;
    }
    this.retryMs = 0;
    this.opts.health.ok();
    this.opts.afterCommit?.();
    outcomes.forEach((outcome, i) => {
      const entry = batch[i]!;
      if (outcome.ok) entry.resolve(outcome.value);
      else entry.reject(outcome.error);
    });
    // Writes that arrived while this batch ran (from its callers' continuations) go in the next one.
    if (this.queue.length > 0 && this.immediate === null) this.immediate = setImmediate(this.flush);
  }

  /** The queued writes still wanted; those whose caller gave up, or whose deadline passed while locked out, answered. */
  private take(): Entry[] {
    const now = Date.now();
    const batch: Entry[] = [];
    for (const e of this.queue) {
      if (e.cancel?.aborted) {
        // Its caller gave up at its deadline while the database was locked (the caller's timer fired before ours):
        // the lock is why, and the operator hears of it.
        if (this.retryMs > 0 && now >= e.deadline) this.opts.health.failed('busy');
        e.reject(e.cancel.reason);
      } else if (this.retryMs > 0 && now >= e.deadline) {
        this.opts.health.failed('busy');
        e.reject(new StoreUnavailableError('busy'));
      } else {
        batch.push(e);
      }
    }
    this.queue = [];
    return batch;
  }

  /** One transaction, a savepoint per write. Throws (all rolled back) when the database itself failed. */
  private transaction(batch: Entry[]): Outcome[] {
    this.begin.run();
    try {
      const outcomes = batch.map((e): Outcome => {
        try {
          return { ok: true, value: this.inSavepoint(e.work) };
        } catch (error) {
          // The transaction as a whole is in doubt (SQLite may have rolled it back already): none of it stands.
          if (unavailableCause(error) !== null) throw error;
          return { ok: false, error };
        }
      });
      this.commit.run();
      return outcomes;
    } catch (error) {
      if (this.db.open && this.db.inTransaction) {
        try {
          this.rollback.run();
        } catch {
          // already rolled back by SQLite
        }
      }
      throw error;
    }
  }

  private fail(batch: Entry[], cause: UnavailableCause, error?: unknown): void {
    this.retryMs = 0;
    this.opts.health.failed(cause);
    for (const e of batch) e.reject(new StoreUnavailableError(cause, { cause: error }));
  }

  private retryLater(): void {
    this.retryMs = this.retryMs === 0 ? RETRY_FIRST_MS : Math.min(this.retryMs * 2, RETRY_MAX_MS);
    let nextDeadline = Infinity;
    for (const e of this.queue) nextDeadline = Math.min(nextDeadline, e.deadline);
    // Woken at the first deadline at the latest, to answer it in time.
    const wait = Math.max(0, Math.min(this.retryMs, nextDeadline - Date.now()));
    this.timer = setTimeout(this.flush, wait);
  }
}
