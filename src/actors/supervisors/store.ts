import type Database from 'better-sqlite3';
import { closeDatabase } from '../../store/database.js';
import { createWrites, type StoreWrites } from '../../store/index.js';
import type { BindRequest } from '../../store/associations.js';
import type { NewInvite } from '../../store/invites.js';
import type { ApplyPushRequest } from '../../store/peers.js';
import type { CallbackEnqueue, ClaimRequest } from '../../store/callbacks.js';
import type { SessionWrite } from '../../store/sessions.js';
import type { ReadSnapshot } from '../../store/lookup-connection.js';
import type { SystemDeps } from '../deps.js';
import { call, supervisor, type Handlers } from '../supervisor.js';

interface StoreResource {
  db: Database.Database;
  writes: StoreWrites;
  /** the lookups' read snapshot, ended after every write so that no later read misses it */
  lookupSnapshot?: ReadSnapshot;
}

/** Every write the store performs, by request type. Handlers are thin: the SQL lives in the table modules. */
export const storeHandlers = {
  ACCOUNT_REGISTER: (e: { userId: string; token: string; now: number }, r: StoreResource) =>
    r.writes.accounts.register(e.userId, e.token, e.now),
  ACCOUNT_LOGOUT: (e: { token: string }, r: StoreResource) => r.writes.accounts.logout(e.token),
  TERMS_ACCEPT: (
    e: { userId: string; urls: string[]; masterVersion: string | null; isComplete: (accepted: string[]) => boolean },
    r: StoreResource,
  ) => r.writes.accounts.acceptTerms(e.userId, e.urls, e.masterVersion, e.isComplete),
  SESSION_NEW_SID: (_e: Record<string, never>, r: StoreResource) => r.writes.sessions.newSid(),
  SESSION_CREATE: (e: { medium: string; clientSecret: string; write: SessionWrite }, r: StoreResource) =>
    r.writes.sessions.create(e.medium, e.clientSecret, e.write),
  SESSION_SAVE: (e: { write: SessionWrite; expectedVersion: number | null }, r: StoreResource) =>
    r.writes.sessions.save(e.write, e.expectedVersion),
  SESSIONS_DELETE_OLD: (e: { cutoffMs: number }, r: StoreResource) => r.writes.sessions.deleteOlderThan(e.cutoffMs),
  ASSOCIATION_BIND: (e: BindRequest, r: StoreResource) => r.writes.associations.bind(e),
  INVITE_STORE: (e: NewInvite, r: StoreResource) => r.writes.invites.store(e),
  INVITE_DISCARD: (e: { token: string; ephemeralPublicKey: string }, r: StoreResource) =>
    r.writes.invites.discard(e.token, e.ephemeralPublicKey),
  EPHEMERAL_KEY_CHECK: (e: { publicKey: string }, r: StoreResource) => r.writes.invites.checkEphemeralKey(e.publicKey),
  ASSOCIATION_UNBIND: (e: { medium: string; address: string; mxid: string; now: number }, r: StoreResource) =>
    r.writes.associations.unbind(e.medium, e.address, e.mxid, e.now),
  // Replication: a peer acknowledged our log up to lastId (its cursor moves); a verified inbound batch, stored
  // whole in one transaction.
  PEER_SENT: (e: { name: string; lastId: number; now: number }, r: StoreResource) =>
    r.writes.peers.markSent(e.name, e.lastId, e.now),
  REPLICATION_APPLY: (e: ApplyPushRequest, r: StoreResource) => r.writes.peers.applyPush(e),
  // Homeserver callbacks (the notifier's outbox). CALLBACK_ENQUEUE records one in its own transaction (a bind
  // records it inside the bind's transaction instead); the others are the notifier worker's.
  CALLBACK_ENQUEUE: (e: CallbackEnqueue, r: StoreResource) =>
    r.db.transaction(() => r.writes.callbacks.enqueue(e))(),
  CALLBACKS_CLAIM: (e: ClaimRequest, r: StoreResource) => r.writes.callbacks.claim(e),
  CALLBACK_DELIVERED: (e: { id: number; now: number; deleteInviteTokens: boolean }, r: StoreResource) =>
    r.writes.callbacks.delivered(e.id, e.now, e.deleteInviteTokens),
  CALLBACK_RETRY: (e: { id: number; claimedUntil: number; nextAttemptTs: number; lastError: string }, r: StoreResource) =>
    r.writes.callbacks.retry(e.id, e.claimedUntil, e.nextAttemptTs, e.lastError),
  CALLBACK_ABANDON: (e: { id: number; claimedUntil: number; lastError: string }, r: StoreResource) =>
    r.writes.callbacks.abandon(e.id, e.claimedUntil, e.lastError),
  CALLBACK_RELEASE: (e: { id: number; claimedUntil: number }, r: StoreResource) =>
    r.writes.callbacks.release(e.id, e.claimedUntil),
  CALLBACKS_PURGE: (e: { now: number }, r: StoreResource) => r.writes.callbacks.purge(e.now),
};

export const askStore = call<typeof storeHandlers>();

/**
 * Every handler, then the end of the lookups' snapshot (see store/lookup-connection.ts): the handlers are
 * synchronous, so by then their transaction has committed, and the next lookup reads from a new snapshot.
 */
function endingLookupSnapshot(handlers: Handlers<StoreResource>): Handlers<StoreResource> {
  const wrapped: Handlers<StoreResource> = {};
  for (const [type, handler] of Object.entries(handlers)) {
    wrapped[type] = (e, r, system) => {
      try {
        return handler(e, r, system);
      } finally {
        r.lookupSnapshot?.end();
      }
    };
  }
  return wrapped;
}

/**
 * The only writer of SQLite. Requests run one at a time, so a write transaction never interleaves with another;
 * reads on hot paths use prepared statements directly (lookups on their own read-only connection). Closing it
 * closes the database.
 */
export const storeSupervisor = supervisor('store', {
  concurrency: 1,
  open: (deps: SystemDeps): StoreResource => ({
    db: deps.db,
    writes: createWrites(deps.db),
    lookupSnapshot: deps.lookupSnapshot,
  }),
  close: ({ db }) => closeDatabase(db),
  handlers: endingLookupSnapshot(storeHandlers),
});
