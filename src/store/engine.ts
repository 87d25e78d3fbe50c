/**
 * The store's engine: what the store supervisor holds, whichever database runs (SQLite, src/store/sqlite-store.ts;
 * PostgreSQL, src/store/pg/store.ts). Reads are the read facade handed out to everyone; writes are these async
 * operations, one per store facade method, each recorded in a transaction of its own (SQLite groups the writes of
 * one turn of the event loop into one commit). Handlers and machines see only this: no SQL, no connection.
 */
import type { BindRecord } from './associations.js';
import type { CallbackEnqueue, ClaimedCallback, ClaimRequest } from './callbacks.js';
import type { WriteRequest } from './group-commit.js';
import type { NewInvite } from './invites.js';
import type { ApplyPushRequest, ApplyPushResult } from './peers.js';
import type { StoreReads } from './reads.js';
import type { SessionSave, SessionWrite } from './sessions.js';
import type { Admission } from '../util/rate-limiter.js';

export type { WriteRequest };

/** Every write the store takes; `req` carries the caller's deadline and cancellation. */
export interface StoreWriteOps {
  registerAccount(e: { userId: string; token: string; now: number }, req: WriteRequest): Promise<void>;
  /** true when the token existed */
  logout(e: { token: string }, req: WriteRequest): Promise<boolean>;
  /** `documents`: each terms document's URLs (one per language); consent is recorded once every one has one accepted */
  acceptTerms(
    e: { userId: string; urls: string[]; masterVersion: string | null; documents: string[][] },
    req: WriteRequest,
  ): Promise<{ consented: boolean }>;
  /**
   * Sydent's rows and the machine row of a new session, under the sid the caller picked (newSid): the new row's
   * version (1). A sid in use is refused with SidTakenError, nothing written.
   */
  createSession(e: { medium: string; clientSecret: string; write: SessionWrite }, req: WriteRequest): Promise<number>;
  /** the row's new version; SessionConflictError when someone else saved first */
  saveSession(e: { write: SessionWrite; expectedVersion: number | null }, req: WriteRequest): Promise<number>;
  /** a slice of the sessions sweep (at most `limit` sessions untouched since `cutoffMs`): how many it deleted */
  deleteOldSessions(e: { cutoffMs: number; limit: number }, req: WriteRequest): Promise<number>;
  bind(e: BindRecord, req: WriteRequest): Promise<void>;
  /**
   * 3pid/bind: the session's move to bound and the binding (its invites marked sent, its callback queued) in one
   * write: either both are stored or neither (a session never says bound without its binding). Answers the session
   * row's new version.
   */
  bindSession(e: { session: SessionSave; bind: BindRecord }, req: WriteRequest): Promise<number>;
  unbind(e: { medium: string; address: string; mxid: string; now: number }, req: WriteRequest): Promise<boolean>;
  storeInvite(e: NewInvite, req: WriteRequest): Promise<void>;
  discardInvite(e: { token: string; ephemeralPublicKey: string }, req: WriteRequest): Promise<void>;
  /** whether the key is one of ours (each check is counted, as Sydent does) */
  checkEphemeralKey(e: { publicKey: string }, req: WriteRequest): Promise<boolean>;
  markPeerSent(e: { name: string; lastId: number; now: number }, req: WriteRequest): Promise<boolean>;
  applyPush(e: ApplyPushRequest, req: WriteRequest): Promise<ApplyPushResult>;
  enqueueCallback(e: CallbackEnqueue, req: WriteRequest): Promise<number>;
  claimCallbacks(e: ClaimRequest, req: WriteRequest): Promise<ClaimedCallback[]>;
  callbackDelivered(
    e: { id: number; now: number; deleteInviteTokens: boolean },
    req: WriteRequest,
  ): Promise<{ updated: boolean; tokensDeleted: number }>;
  retryCallback(
    e: { id: number; claimedUntil: number; nextAttemptTs: number; lastError: string },
    req: WriteRequest,
  ): Promise<boolean>;
  abandonCallback(e: { id: number; claimedUntil: number; lastError: string }, req: WriteRequest): Promise<boolean>;
  releaseCallback(e: { id: number; claimedUntil: number }, req: WriteRequest): Promise<boolean>;
  purgeCallbacks(e: { now: number }, req: WriteRequest): Promise<number>;
  /** one token of `key`'s bucket in the rate limit `bucket`, if there is one (the buckets every node shares) */
  takeRateToken(
    e: { bucket: string; key: string; burst: number; rateHz: number; now: number },
    req: WriteRequest,
  ): Promise<Admission>;
  /** gives back a token taken for `key` (never more than `burst`) */
  refundRateToken(e: { bucket: string; key: string; burst: number }, req: WriteRequest): Promise<void>;
  /**
   * Whether this node is the one pushing to the peer `name`: `held` (it was already), `acquired` (it is from now on:
   * the cursor in the database is the one to push from) or `elsewhere` (another node is).
   */
  peerLease(e: { name: string }, req: WriteRequest): Promise<PeerLease>;
  /**
   * Waits (within the request's deadline) until this node holds `key`, which one node at a time may: requests for
   * one session spread over several nodes take their turns. Answers whether it does (false: the time ran out).
   */
  holdKey(e: { key: string }, req: WriteRequest): Promise<boolean>;
  /** gives `key` back */
  releaseKey(e: { key: string }, req: WriteRequest): Promise<void>;
}

export type PeerLease = 'held' | 'acquired' | 'elsewhere';

/**
 * What the nodes on one database tell each other once committed: `log` (the replication log grew: pushers look),
 * `callbacks` (a homeserver callback was recorded: outbox workers look). A single-node engine has nobody to hear from
 * and reports its own commits through the callers instead (they wake the workers themselves).
 */
export type StoreSignal = 'log' | 'callbacks';

export interface StoreEngine {
  readonly engine: 'sqlite' | 'postgresql';
  readonly reads: StoreReads;
  readonly writes: StoreWriteOps;
  /**
   * Tells `listener` of what other nodes committed (see StoreSignal); `callbacks` with the destination of the row
   * recorded, when known (a worker busy with or pausing that homeserver has nothing to look at).
   */
  onSignal(listener: (signal: StoreSignal, destination?: string) => void): void;
  /** Refuses what is still queued and closes the connections. Safe to call twice. */
  close(): Promise<void>;
}
