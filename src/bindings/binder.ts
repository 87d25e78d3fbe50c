/**
 * Publishing and withdrawing 3PID bindings: the flow the sessions supervisor runs for 3pid/bind, the internal API
 * and unbind. The flow owns the work around the record: it hashes the 3PID with the pepper it read, signs the
 * association and the pending invites with our long-term key, builds the homeserver callback; then the store
 * records it as data (binding, invites marked sent, callback outbox row, and for 3pid/bind the session's move to
 * bound: one transaction), refusing it when the pepper or the pending invites changed meanwhile, in which case the
 * flow makes it again. Once committed, the notifier and replication are woken.
 */
import type { CallOptions } from '../actors/ask.js';
import type { Facades } from '../actors/facade.js';
import type { Clock } from '../clock.js';
import { lookupHash } from '../crypto/index.js';
import { serverNameOfUserId } from '../matrix/index.js';
import type { ServerIdentity } from '../identity.js';
import type { Logger } from '../log.js';
import {
  ASSOCIATION_LIFETIME_MS,
  BindConflictError,
  type Association,
  type BindRecord,
  type PendingInvite,
  type Signed,
} from '../store/associations.js';

export interface BinderDeps {
  facades: Pick<Facades, 'stores' | 'notifier' | 'replication' | 'reads'>;
  /** our signing key: a resource of the supervisor that runs the flow */
  identity: ServerIdentity;
  clock: Clock;
  log: Logger;
}

export interface Threepid {
  medium: string;
  /** normalised: casefolded email, or E.164 digits */
  address: string;
}

/** The association as the homeserver receives it: signed, with this 3PID's pending invites signed in. */
export type SignedAssociation = Signed<Association & { invites?: unknown[] }>;

/** How often a bind is made again when the pepper or the invites changed under it (a rotation is rare). */
const BIND_ATTEMPTS = 3;

const ONBIND_PATH = '/_matrix/federation/v1/3pid/onbind';

/**
 * Binds `threepid` to `mxid`. `record` stores the binding; by default alone, while 3pid/bind stores it in one write
 * with its session's move to bound (the sessions supervisor). A BindConflictError from it makes the binding again.
 */
export async function bindThreepid(
  deps: BinderDeps,
  threepid: Threepid,
  mxid: string,
  request: CallOptions,
  record: (binding: BindRecord) => Promise<unknown> = (binding) => deps.facades.stores.bind(binding, request),
): Promise<SignedAssociation> {
  const destination = serverNameOfUserId(mxid);
  if (!destination) deps.log.warn('binding to a user ID without a valid server name: no homeserver will be told');
  const { reads } = deps.facades;
  for (let attempt = 1; ; attempt++) {
    const [pepper, invites] = await Promise.all([
      // The write checks the pepper it hashed with is still the stored one: a rotation within the cache's second
      // is a conflict, and the binding is made again with the pepper read afresh.
      attempt === 1 ? reads.associations.pepper() : reads.associations.storedPepper(),
      reads.invites.pending(threepid.medium, threepid.address),
    ]);
    const made = makeBinding(deps.identity, threepid, mxid, deps.clock.now(), pepper, invites, destination);
    try {
      await record(made.record);
    } catch (error) {
      if (error instanceof BindConflictError && attempt < BIND_ATTEMPTS) continue;
      throw error;
    }
    if (destination) wakeNotifier(deps, destination);
    wakeReplication(deps);
    return made.signed;
  }
}

/**
 * The binding of `threepid` to `mxid` at `now`, as stored and as sent: hashed with `pepper`, signed, with the
 * `invites` signed into the homeserver's copy. What lookups and peers see carries no invites (room ids, senders,
 * tokens are the homeserver's business).
 */
function makeBinding(
  identity: ServerIdentity,
  threepid: Threepid,
  mxid: string,
  now: number,
  pepper: string,
  invites: PendingInvite[],
  destination: string | null,
): { record: BindRecord; signed: SignedAssociation } {
  const assoc: Association = {
    medium: threepid.medium,
    address: threepid.address,
    mxid,
    ts: now,
    not_before: now,
    not_after: now + ASSOCIATION_LIFETIME_MS,
  };
  const published = identity.sign(assoc);
  const signedInvites = invites.map(({ id: _id, ...invite }) => ({
    ...invite,
    mxid,
    signed: identity.sign({ mxid, token: invite.token }),
  }));
  const signed: SignedAssociation = signedInvites.length
    ? identity.sign({ ...assoc, invites: signedInvites })
    : published;
  return {
    signed,
    record: {
      medium: threepid.medium,
      address: threepid.address,
      mxid,
      ts: now,
      notAfter: assoc.not_after,
      lookupHash: lookupHash(threepid.address, threepid.medium, pepper),
      pepperSeen: pepper,
      originServer: identity.serverName,
      sgAssoc: JSON.stringify(published),
      inviteIds: invites.map((i) => i.id),
      callback: destination ? { destination, path: ONBIND_PATH, body: signed } : null,
    },
  };
}

/** `false` when that binding did not exist here (the answer is the same: it is gone). */
export async function unbindThreepid(
  deps: BinderDeps,
  threepid: Threepid,
  mxid: string,
  request: CallOptions,
): Promise<boolean> {
  const removed = await deps.facades.stores.unbind(
    { medium: threepid.medium, address: threepid.address, mxid, now: deps.clock.now() },
    request,
  );
  // the tombstone is in the replication log
  if (removed) wakeReplication(deps);
  return removed;
}

function wakeNotifier(deps: BinderDeps, destination: string): void {
  // The callback is already stored: a lost wake-up only delays it until the notifier's next look.
  deps.facades.notifier
    .wake({ destination })
    .catch((err: unknown) => deps.log.warn({ err }, 'could not wake the notifier'));
}

function wakeReplication(deps: BinderDeps): void {
  // The log row is committed: a lost wake-up only delays the push until the replication tick (10 s).
  deps.facades.replication.wake({}).catch((err: unknown) => deps.log.warn({ err }, 'could not wake replication'));
}
