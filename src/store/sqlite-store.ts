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
import { GroupCommitter, type WriteRequest } from './group-commit.js';
import { ensurePepper } from './hashing.js';
import { DatabaseFile, StoreHealth } from './health.js';
import { createWrites, type StoreWrites } from './index.js';
import { InviteReads } from './invites.js';
import { openLookupConnection, ReadSnapshot } from './lookup-connection.js';
import type { Migration } from './migrations.js';
import { PeerReads } from './peers.js';
import { sqliteReads, type StoreReads } from './reads.js';
import { SessionReads } from './sessions.js';

interface SqliteStoreOptions {
  log: Logger;
  /** our migrations to apply (tests inject their own) */
  migrations?: readonly Migration[];
}

export class SqliteStore {
  readonly reads: StoreReads;
  private readonly writes: StoreWrites;
  private readonly committer: GroupCommitter;
  private closed = false;

  private constructor(
    private readonly db: SqliteDatabase,
    private readonly readDb: SqliteDatabase | null,
    private readonly snapshot: ReadSnapshot | null,
    path: string,
    log: Logger,
  ) {
    const tokens = new TokenCache();
    this.writes = createWrites(db, tokens);
    // Reads go to the read connection (an in-memory database has none: a second connection would not see it).
    const r = readDb ?? db;
    const file = new DatabaseFile(isMemoryPath(path) ? null : path);
    const probe = r.prepare('SELECT count(*) FROM sqlite_master');
    this.reads = sqliteReads({
      accounts: new AccountReads(r, tokens),
      sessions: new SessionReads(r),
      associations: new AssociationReads(r, snapshot ?? undefined),
      callbacks: new CallbackReads(r),
      invites: new InviteReads(r),
      peers: new PeerReads(r),
      probe: () => probe.get(),
      file,
    });
    this.committer = new GroupCommitter(db, {
      file,
      health: new StoreHealth(log, path),
      // A read after a write, even in the same turn of the event loop, must see it: the shared read snapshot ends.
      afterCommit: () => snapshot?.end(),
    });
  }

  /**
   * Opens (creating it when new) and migrates `path`, makes sure it has a lookup pepper, and opens the read
   * connection. Throws, with everything closed, when the database cannot be opened or brought up to date.
   */
  static open(path: string, opts: SqliteStoreOptions): SqliteStore {
    const db = openDatabase(path, opts.migrations ? { migrations: opts.migrations } : {});
    let readDb: SqliteDatabase | null = null;
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
      return new SqliteStore(db, readDb, readDb ? new ReadSnapshot(readDb) : null, path, opts.log);
    } catch (error) {
      if (readDb) closeDatabase(readDb);
      closeDatabase(db);
      throw error;
    }
  }

  /** Runs `work` on the write side in the next group commit; resolves with its result once committed. */
  write<T>(work: (writes: StoreWrites) => T, request: WriteRequest): Promise<T> {
    return this.committer.submit(() => work(this.writes), request);
  }

  /** Refuses what is still queued, ends the read snapshot, closes both connections. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.committer.close();
    this.snapshot?.end();
    if (this.readDb) closeDatabase(this.readDb);
    closeDatabase(this.db);
  }
}
