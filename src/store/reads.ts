/**
 * The store's read facade: every read anyone outside the store makes, typed and asynchronous, so that another
 * engine (PostgreSQL, issue 23) can answer them without a change to handlers or machines. The store supervisor
 * makes it when it opens the database and hands it out; nothing else holds a connection.
 *
 * The SQLite engine answers from prepared statements on the read connection (src/store/lookup-connection.ts), so a
 * read costs no hop through an actor: the promise is already settled when it is returned. The one exception is a
 * lookup of many hashes, which lookup workers share (src/store/lookup-pool.ts) once they are ready.
 */
import type { Account, AccountReads } from './accounts.js';
import { partitionByValue, sortedUnique, type AssociationReads, type PendingInvite } from './associations.js';
import type { CallbackReads } from './callbacks.js';
import type { DatabaseFile } from './health.js';
import type { InviteReads } from './invites.js';
import type { HashLookupPool } from './lookup-pool.js';
import { JsonMembers, objectJson, objectOfParts } from './mappings-json.js';
import type { PeerReads } from './peers.js';
import type { SessionReads } from './sessions.js';
import { asUnavailable } from './unavailable.js';

/** The methods `K` of `T`, each answering a promise of what it answered. */
type Async<T, K extends keyof T> = {
  readonly [P in K]: T[P] extends (...args: infer A) => infer R ? (...args: A) => Promise<R> : never;
};

/** What /ready says of the database. */
type DatabaseState = 'ok' | 'unreachable' | 'file missing' | 'file replaced';

export interface StoreReads {
  accounts: Async<AccountReads, 'accountByToken' | 'acceptedUrls'>;
  sessions: Async<SessionReads, 'findSid' | 'findLatest' | 'load' | 'countByState'>;
  associations: Async<AssociationReads, 'pepper' | 'storedPepper' | 'lookup' | 'lookupHashes'> & {
    /**
     * What `lookupHashes` finds, as the text of a JSON object of hash → mxid (its UTF-8 bytes, for a large lookup):
     * the form a lookup answers in, without a map of thousands of entries to build and walk again.
     */
    mappingsJson(hashes: readonly string[], now: number): Promise<string | Buffer>;
  };
  callbacks: Async<CallbackReads, 'counts' | 'pendingCount' | 'list' | 'byId' | 'nextDue'>;
  invites: Async<InviteReads, 'senderOfToken' | 'pending'>;
  /** replication peers and the replication log */
  peers: Async<PeerReads, 'all' | 'active' | 'activeByName' | 'localAfter' | 'lastLocalId'>;
  /** whether the database answers and is still the file it was opened from (GET /ready) */
  state(): Promise<DatabaseState>;
  /** the reads of a lookup, answered on the spot, from an engine whose reads are synchronous (SQLite) */
  immediate?: ImmediateReads;
}

/**
 * The reads of a lookup request, answering values rather than promises: the client listener's fast lane answers a
 * one-hash lookup with them in the turn that read it, without a promise and a microtask per read (bench/README.md,
 * "Code shaped by measurements"). Only an engine whose reads are synchronous has them. A failure the database
 * explains throws StoreUnavailableError, as the facade's promises reject with it.
 */
export interface ImmediateReads {
  accountByToken(token: string): Account | undefined;
  pepper(): string;
  /** as `associations.mappingsJson`, or undefined for a lookup the lookup workers share (answered by that one) */
  mappingsJson(hashes: readonly string[], now: number): string | undefined;
}

export type { Account, PendingInvite };

/**
 * `names` of `target` as promise-answering functions. A failure the database explains (locked, closed, gone) becomes
 * StoreUnavailableError, which HTTP answers 503.
 */
function asyncMethods<T extends object, K extends keyof T & string>(target: T, names: readonly K[]): Async<T, K> {
  const out: Record<string, (...args: unknown[]) => Promise<unknown>> = {};
  for (const name of names) {
    const method = target[name] as unknown as (...args: unknown[]) => unknown;
    out[name] = async (...args) => {
      try {
        return method.apply(target, args);
      } catch (error) {
        throw asUnavailable(error);
      }
    };
  }
  return out as Async<T, K>;
}

interface SqliteReadParts {
  accounts: AccountReads;
  sessions: SessionReads;
  associations: AssociationReads;
  callbacks: CallbackReads;
  invites: InviteReads;
  peers: PeerReads;
  /** a cheap statement that reads the database file (the schema page) */
  probe: () => unknown;
  file: DatabaseFile;
  /** workers that take slices of large hash lookups (none for an in-memory database) */
  lookupPool?: HashLookupPool;
}

/** Lookups of at least this many hashes are cut into slices for the lookup workers too. */
const SPREAD_MIN_HASHES = 1000;

/**
 * A large hash lookup, as the text of its JSON object (see `mappingsJson`), in parts of contiguous values: one per
 * ready worker, sent first, and the first (the smallest hashes) on the read connection meanwhile. Without a ready worker, all of it
 * on the read connection.
 */
export async function spreadMappings(
  associations: AssociationReads,
  pool: HashLookupPool,
  hashes: readonly string[],
  now: number,
): Promise<string | Buffer> {
  const workers = pool.readyWorkers();
  if (workers.length === 0) return objectJson(associations.lookupHashes(hashes, now));
  // Cut by value, not sorted first: each worker sorts its own part, off the event loop.
  const parts = partitionByValue(hashes, workers.length + 1);
  const theirs = workers.map((w, i) => w.members(parts[i + 1]!, now));
  // If our slice fails, theirs are not waited for: their failures are not left unhandled.
  for (const members of theirs) members.catch(() => undefined);
  const own = new JsonMembers();
  associations.membersOfSorted(sortedUnique(parts[0]!), now, own);
  const answer: Buffer[][] = [own.finish()];
  for (const members of await Promise.all(theirs)) answer.push([members]);
  return objectOfParts(answer);
}

/** A value read synchronously; a failure the database explains as StoreUnavailableError. */
function readNow<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    throw asUnavailable(error);
  }
}

/** A value read synchronously, as a settled promise (see readNow). */
async function settled<T>(read: () => T): Promise<T> {
  return readNow(read);
}

export function sqliteReads(parts: SqliteReadParts): StoreReads {
  const { accounts, associations, lookupPool: pool } = parts;
  return {
    // The reads of every lookup request, written out: no argument array per call.
    accounts: {
      accountByToken: (token) => settled(() => accounts.accountByToken(token)),
      acceptedUrls: (userId) => settled(() => accounts.acceptedUrls(userId)),
    },
    sessions: asyncMethods(parts.sessions, ['findSid', 'findLatest', 'load', 'countByState']),
    associations: {
      pepper: () => settled(() => associations.pepper()),
      storedPepper: () => settled(() => associations.storedPepper()),
      lookup: (medium, address, now) => settled(() => associations.lookup(medium, address, now)),
      lookupHashes: (hashes, now) => settled(() => associations.lookupHashes(hashes, now)),
      mappingsJson: (hashes, now) =>
        pool && hashes.length >= SPREAD_MIN_HASHES
          ? spreadMappings(associations, pool, hashes, now).catch((error: unknown) => {
              throw asUnavailable(error);
            })
          : settled(() => objectJson(associations.lookupHashes(hashes, now))),
    },
    immediate: {
      accountByToken: (token) => readNow(() => accounts.accountByToken(token)),
      pepper: () => readNow(() => associations.pepper()),
      mappingsJson: (hashes, now) =>
        pool && hashes.length >= SPREAD_MIN_HASHES
          ? undefined
          : readNow(() => objectJson(associations.lookupHashes(hashes, now))),
    },
    callbacks: asyncMethods(parts.callbacks, ['counts', 'pendingCount', 'list', 'byId', 'nextDue']),
    invites: asyncMethods(parts.invites, ['senderOfToken', 'pending']),
    peers: asyncMethods(parts.peers, ['all', 'active', 'activeByName', 'localAfter', 'lastLocalId']),
    state: () => {
      try {
        parts.probe();
      } catch {
        return Promise.resolve('unreachable');
      }
      // A file replaced or removed under a running server (a restore copied over it, a volume gone) would take
      // writes nobody reads again.
      const problem = parts.file.problem();
      return Promise.resolve(problem === 'missing' ? 'file missing' : problem === 'replaced' ? 'file replaced' : 'ok');
    },
  };
}
