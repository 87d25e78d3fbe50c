import type { BindRecord } from '../../store/associations.js';
import type { CallbackEnqueue, ClaimRequest } from '../../store/callbacks.js';
import type { WriteRequest } from '../../store/group-commit.js';
import type { StoreWrites } from '../../store/index.js';
import type { NewInvite } from '../../store/invites.js';
import type { ApplyPushRequest } from '../../store/peers.js';
import type { SessionSave, SessionWrite } from '../../store/sessions.js';
import { SqliteStore } from '../../store/sqlite-store.js';
import type { SystemDeps } from '../deps.js';
import type { SupervisorEnv } from '../facade.js';
import { supervisor, type RequestContext } from '../supervisor.js';

interface StoreResource {
  store: SqliteStore;
}

/** Runs one write in the next group commit, within the request's deadline. */
function write<T>(r: StoreResource, request: RequestContext, work: (w: StoreWrites) => T): Promise<T> {
  const req: WriteRequest = { deadline: request.deadline, signal: request.signal };
  return r.store.write(work, req);
}

/**
 * Every write, by facade method (`facades.stores.bind(...)`). Payloads are plain data; the handlers only record
 * them (the SQL lives in the table modules), checking what the caller saw where it matters (a bind's pepper and
 * invites, a session's row version).
 */
export const storeHandlers = {
  registerAccount: (e: { userId: string; token: string; now: number }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.accounts.register(e.userId, e.token, e.now)),
  /** true when the token existed */
  logout: (e: { token: string }, r: StoreResource, q: RequestContext) => write(r, q, (w) => w.accounts.logout(e.token)),
  /** `documents`: each terms document's URLs (one per language); consent is recorded once every one has one accepted */
  acceptTerms: (
    e: { userId: string; urls: string[]; masterVersion: string | null; documents: string[][] },
    r: StoreResource,
    q: RequestContext,
  ) => write(r, q, (w) => w.accounts.acceptTerms(e.userId, e.urls, e.masterVersion, e.documents)),
  createSession: (
    e: { medium: string; clientSecret: string; write: SessionWrite },
    r: StoreResource,
    q: RequestContext,
  ) => write(r, q, (w) => w.sessions.create(e.medium, e.clientSecret, e.write)),
  saveSession: (e: { write: SessionWrite; expectedVersion: number | null }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.sessions.save(e.write, e.expectedVersion)),
  /** a slice of the sessions sweep: how many expired sessions it deleted */
  deleteOldSessions: (e: { cutoffMs: number; limit: number }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.sessions.deleteExpired(e.cutoffMs, e.limit)),
  bind: (e: BindRecord, r: StoreResource, q: RequestContext) => write(r, q, (w) => w.associations.bind(e)),
  /**
   * 3pid/bind: the session's move to bound and the binding (its invites marked sent, its callback queued) in one
   * write: either both are stored or neither (a session never says bound without its binding). Answers the session
   * row's new version.
   */
  bindSession: (e: { session: SessionSave; bind: BindRecord }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => {
      const rowVersion = w.sessions.save(e.session.write, e.session.expectedVersion);
      w.associations.bind(e.bind);
      return rowVersion;
    }),
  unbind: (e: { medium: string; address: string; mxid: string; now: number }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.associations.unbind(e.medium, e.address, e.mxid, e.now)),
  storeInvite: (e: NewInvite, r: StoreResource, q: RequestContext) => write(r, q, (w) => w.invites.store(e)),
  discardInvite: (e: { token: string; ephemeralPublicKey: string }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.invites.discard(e.token, e.ephemeralPublicKey)),
  /** whether the key is one of ours (each check is counted, as Sydent does) */
  checkEphemeralKey: (e: { publicKey: string }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.invites.checkEphemeralKey(e.publicKey)),
  // Replication: a peer acknowledged our log up to lastId (its cursor moves); a verified inbound batch, stored whole.
  markPeerSent: (e: { name: string; lastId: number; now: number }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.peers.markSent(e.name, e.lastId, e.now)),
  applyPush: (e: ApplyPushRequest, r: StoreResource, q: RequestContext) => write(r, q, (w) => w.peers.applyPush(e)),
  // Homeserver callbacks (the notifier's outbox). A bind records its callback inside its own write; these are the
  // notifier worker's.
  enqueueCallback: (e: CallbackEnqueue, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.callbacks.enqueue(e)),
  claimCallbacks: (e: ClaimRequest, r: StoreResource, q: RequestContext) => write(r, q, (w) => w.callbacks.claim(e)),
  callbackDelivered: (
    e: { id: number; now: number; deleteInviteTokens: boolean },
    r: StoreResource,
    q: RequestContext,
  ) => write(r, q, (w) => w.callbacks.delivered(e.id, e.now, e.deleteInviteTokens)),
  retryCallback: (
    e: { id: number; claimedUntil: number; nextAttemptTs: number; lastError: string },
    r: StoreResource,
    q: RequestContext,
  ) => write(r, q, (w) => w.callbacks.retry(e.id, e.claimedUntil, e.nextAttemptTs, e.lastError)),
  abandonCallback: (e: { id: number; claimedUntil: number; lastError: string }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.callbacks.abandon(e.id, e.claimedUntil, e.lastError)),
  releaseCallback: (e: { id: number; claimedUntil: number }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.callbacks.release(e.id, e.claimedUntil)),
  purgeCallbacks: (e: { now: number }, r: StoreResource, q: RequestContext) =>
    write(r, q, (w) => w.callbacks.purge(e.now)),
};

/**
 * Owns the database: opens the write and read connections of `[db] db.file`, migrates, makes sure there is a lookup
 * pepper, and hands out the read facade; closes them last at shutdown. Its handlers are the only writers. Requests
 * are not queued here: each goes straight into the next group commit, which serialises the writes.
 */
export const storeSupervisor = supervisor('store', {
  concurrency: Number.POSITIVE_INFINITY,
  open: (deps: SystemDeps, env: SupervisorEnv): StoreResource => {
    const store = SqliteStore.open(deps.config.db.dbFile, { log: deps.log });
    env.provideReads(store.reads);
    return { store };
  },
  close: ({ store }) => store.close(),
  handlers: storeHandlers,
});
