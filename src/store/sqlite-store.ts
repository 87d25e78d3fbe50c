/**
 * The SQLite engine of the store: the write connection and the read connection of `sydent.db`, opened, migrated and
 * closed here, and nowhere else. The store supervisor owns it; everyone else reads through its read facade
 * (src/store/reads.ts) and writes through the supervisor's facade, whose handlers run here in group commits
 * (src/store/group-commit.ts).
 */
import { lookupHash } from '../crypto/index.js';
import type { Logger } from '../log.js';
import { readableByOthersWarning } from '../util/private-file.js';
import { AccountReads, TokenCache } from './accounts.js';
import { AssociationReads } from './associations.js';
import { CallbackReads } from './callbacks.js';
import { closeDatabase, isMemoryPath, openDatabase, type SqliteDatabase } from './database.js';
import { Checkpointer } from './checkpointer.js';
import { GroupCommitter, type WriteRequest } from './group-commit.js';
import { IdleRelease } from './idle-release.js';
import { ensurePepper } from './hashing.js';
import { DatabaseFile, StoreHealth } from './health.js';
import type { StoreEngine, StoreSignal, StoreWriteOps } from './engine.js';
import { createWrites, type StoreWrites } from './index.js';
import { InviteReads } from './invites.js';
import { openLookupConnection, ReadSnapshot } from './lookup-connection.js';
import { defaultLookupPoolSize, HashLookupPool } from './lookup-pool.js';
import type { Migration } from './migrations.js';
import { PeerReads } from './peers.js';
import { sqliteReads, type StoreReads } from './reads.js';
import { SessionReads } from './sessions.js';
import { RateLimiter } from '../util/rate-limiter.js';
import { systemClock } from '../clock.js';

/** How often the write connection looks for commits made by another process (`onSignal`). */
export const EXTERNAL_COMMITS_POLL_MS = 1000;

interface SqliteStoreOptions {
  log: Logger;
  /** our migrations to apply (tests inject their own) */
  migrations?: readonly Migration[];
  /** how long without reads or writes before the connections' memory is given back (idle-release.ts; tests shorten it) */
  idleReleaseMs?: number;
  /** how often to look for another process's commits (`onSignal`; tests shorten it) */
  externalCommitsPollMs?: number;
}

export class SqliteStore implements StoreEngine {
  readonly engine = 'sqlite';
  readonly reads: StoreReads;
  readonly writes: StoreWriteOps;
  private readonly tables: StoreWrites;
  private readonly committer: GroupCommitter;
  private closed = false;
  private readonly listeners: ((signal: StoreSignal, destination?: string) => void)[] = [];
  private externalCommits: NodeJS.Timeout | null = null;

  private constructor(
    private readonly db: SqliteDatabase,
    private readonly readDb: SqliteDatabase | null,
    private readonly snapshot: ReadSnapshot | null,
    private readonly idle: IdleRelease,
    private readonly lookupPool: HashLookupPool | null,
    private readonly checkpointer: Checkpointer | null,
    private readonly path: string,
    log: Logger,
    private readonly externalCommitsPollMs: number,
  ) {
    const tokens = new TokenCache();
    this.tables = createWrites(db, tokens);
    this.writes = sqliteWriteOps((work, request) => this.write(work, request));
    // Reads go to the read connection (an in-memory database has none: a second connection would not see it).
    const r = readDb ?? db;
    const file = new DatabaseFile(isMemoryPath(path) ? null : path);
    const probe = r.prepare('SELECT count(*) FROM sqlite_master');
    this.reads = sqliteReads({
      accounts: new AccountReads(r, tokens),
      sessions: new SessionReads(r, snapshot ?? undefined),
      associations: new AssociationReads(r, snapshot ?? undefined),
      callbacks: new CallbackReads(r),
      invites: new InviteReads(r),
      peers: new PeerReads(r),
      probe: () => probe.get(),
      file,
      ...(this.lookupPool ? { lookupPool: this.lookupPool } : {}),
    });
    this.committer = new GroupCommitter(db, {
      file,
      health: new StoreHealth(log, path),
      // A read after a write, even in the same turn of the event loop, must see it: the shared read snapshot ends.
      afterCommit: () => {
        snapshot?.end();
        idle.touch();
        checkpointer?.committed();
      },
    });
  }

  /**
   * Opens (creating it when new) and migrates `path`, makes sure it has a lookup pepper, and opens the read
   * connection. Throws, with everything closed, when the database cannot be opened or brought up to date.
   */
  static open(path: string, opts: SqliteStoreOptions): SqliteStore {
    const db = openDatabase(path, opts.migrations ? { migrations: opts.migrations } : {});
    let readDb: SqliteDatabase | null = null;
    let idle: IdleRelease | null = null;
    try {
      if (!isMemoryPath(path)) {
        const warning = readableByOthersWarning(path, 'the lookup pepper, access tokens and 3PID addresses');
        if (warning) opts.log.warn(`database: ${warning}`);
      }
      // Before any lookup is answered (Sydent does it at start-up for the same reason): hashes need a pepper.
      ensurePepper(db, lookupHash);
      // From now on a lock held by another process is waited for off the event loop (group-commit.ts).
      db.pragma('busy_timeout = 0');
      readDb = openLookupConnection(path);
      // Large lookups also read on worker threads, each with its own connection: only where there is a file to open.
      const size = defaultLookupPoolSize();
      const pool = readDb && size > 0 ? new HashLookupPool(path, size) : null;
      // Checkpoints off the event loop: a file only (an in-memory database has no WAL).
      const checkpointer = isMemoryPath(path)
        ? null
        : new Checkpointer(db, path, {
            onFallback: (reason) => opts.log.warn({ reason }, 'database: WAL checkpoints are back on the event loop'),
          });
      let snapshot: ReadSnapshot | null = null;
      const release = (idle = new IdleRelease(readDb ? [db, readDb] : [db], {
        ...(opts.idleReleaseMs !== undefined ? { idleMs: opts.idleReleaseMs } : {}),
        beforeRelease: () => snapshot?.end(),
        afterRelease: () => {
          pool?.release();
          checkpointer?.release();
        },
      }));
      snapshot = readDb ? new ReadSnapshot(readDb, () => release.touch()) : null;
      const pollMs = opts.externalCommitsPollMs ?? EXTERNAL_COMMITS_POLL_MS;
      return new SqliteStore(db, readDb, snapshot, release, pool, checkpointer, path, opts.log, pollMs);
    } catch (error) {
      idle?.stop();
      if (readDb) closeDatabase(readDb);
      closeDatabase(db);
      throw error;
    }
  }

  /** Runs `work` on the write side in the next group commit; resolves with its result once committed. */
  write<T>(work: (writes: StoreWrites) => T, request: WriteRequest): Promise<T> {
    return this.committer.submit(() => work(this.tables), request);
  }

  /**
   * One node per sydent.db (the instance lock), but other processes may write to it while it runs: `sydent-ts peers
   * add` and `remove`, an operator's sqlite3. `PRAGMA data_version` of the write connection moves only when another
   * connection commits (not for our own commits, nor for the checkpoint thread's PASSIVE and RESTART checkpoints), so
   * it is read every EXTERNAL_COMMITS_POLL_MS and a move is told as every signal: the replication worker reloads its
   * peers and looks at the log, the notifier at the outbox, within a second instead of at their next tick.
   */
  onSignal(listener: (signal: StoreSignal, destination?: string) => void): void {
    // nobody else can open an in-memory database
    if (isMemoryPath(this.path)) return;
    this.listeners.push(listener);
    if (this.externalCommits) return;
    const version = () => this.db.pragma('data_version', { simple: true }) as number;
    let seen = version();
    this.externalCommits = setInterval(() => {
      if (this.closed) return;
      const now = version();
      if (now === seen) return;
      seen = now;
      for (const signal of ['log', 'callbacks'] as const) for (const tell of this.listeners) tell(signal);
    }, this.externalCommitsPollMs);
    this.externalCommits.unref();
  }

  /** Refuses what is still queued, ends the read snapshot, closes both connections, the lookup workers' and the checkpoint thread's. Safe to call twice. */
  async close(): Promise<void> {
    this.closeNow();
    await Promise.all([this.lookupPool?.close(), this.checkpointer?.close()]);
  }

  private closeNow(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.externalCommits) clearInterval(this.externalCommits);
    this.committer.close();
    this.idle.stop();
    this.snapshot?.end();
    if (this.readDb) closeDatabase(this.readDb);
    closeDatabase(this.db);
  }
}

type RunWrite = <T>(work: (w: StoreWrites) => T, request: WriteRequest) => Promise<T>;

/** Each write operation as one piece of work on the table modules, in the next group commit. */
function sqliteWriteOps(write: RunWrite): StoreWriteOps {
  // One node: the buckets are this process's (the supervisors keep their own in memory; these serve the same
  // operation for callers that go through the store).
  const buckets = new Map<string, RateLimiter>();
  const bucketOf = (name: string, burst: number, rateHz: number): RateLimiter => {
    let limiter = buckets.get(name);
    if (!limiter) buckets.set(name, (limiter = new RateLimiter(burst, rateHz, systemClock)));
    return limiter;
  };
  return {
    registerAccount: (e, q) => write((w) => w.accounts.register(e.userId, e.token, e.now), q),
    logout: (e, q) => write((w) => w.accounts.logout(e.token), q),
    acceptTerms: (e, q) => write((w) => w.accounts.acceptTerms(e.userId, e.urls, e.masterVersion, e.documents), q),
    createSession: (e, q) => write((w) => w.sessions.create(e.medium, e.clientSecret, e.write), q),
    saveSession: (e, q) => write((w) => w.sessions.save(e.write, e.expectedVersion), q),
    deleteOldSessions: (e, q) => write((w) => w.sessions.deleteExpired(e.cutoffMs, e.limit), q),
    bind: (e, q) => write((w) => w.associations.bind(e), q),
    bindSession: (e, q) =>
      write((w) => {
        const rowVersion = w.sessions.save(e.session.write, e.session.expectedVersion);
        w.associations.bind(e.bind);
        return rowVersion;
      }, q),
    unbind: (e, q) => write((w) => w.associations.unbind(e.medium, e.address, e.mxid, e.now), q),
    storeInvite: (e, q) => write((w) => w.invites.store(e), q),
    discardInvite: (e, q) => write((w) => w.invites.discard(e.token, e.ephemeralPublicKey), q),
    checkEphemeralKey: (e, q) => write((w) => w.invites.checkEphemeralKey(e.publicKey), q),
    markPeerSent: (e, q) => write((w) => w.peers.markSent(e.name, e.lastId, e.now), q),
    applyPush: (e, q) => write((w) => w.peers.applyPush(e), q),
    enqueueCallback: (e, q) => write((w) => w.callbacks.enqueue(e), q),
    claimCallbacks: (e, q) => write((w) => w.callbacks.claim(e), q),
    callbackDelivered: (e, q) => write((w) => w.callbacks.delivered(e.id, e.now, e.deleteInviteTokens), q),
    retryCallback: (e, q) => write((w) => w.callbacks.retry(e.id, e.claimedUntil, e.nextAttemptTs, e.lastError), q),
    abandonCallback: (e, q) => write((w) => w.callbacks.abandon(e.id, e.claimedUntil, e.lastError), q),
    releaseCallback: (e, q) => write((w) => w.callbacks.release(e.id, e.claimedUntil), q),
    purgeCallbacks: (e, q) => write((w) => w.callbacks.purge(e.now), q),
    takeRateToken: async (e) => bucketOf(e.bucket, e.burst, e.rateHz).take(e.key, e.now),
    refundRateToken: async (e) => buckets.get(e.bucket)?.refund(e.key),
    // The instance lock makes this process the only one on the file: it always pushes.
    peerLease: async () => 'held',
    // One node: its own queues already take requests for one session in turn.
    holdKey: async () => true,
    releaseKey: async () => undefined,
  };
}
