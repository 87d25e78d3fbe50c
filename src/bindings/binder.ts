/**
 * Publishing and withdrawing 3PID bindings: the store records the binding, its pending invites and the homeserver
 * callback in one transaction; then the notifier is woken to deliver the callback. Used by 3pid/bind (through the
 * sessions supervisor), the internal API, and unbind.
 */
import type { AnyActorRef } from 'xstate';
import { askNotifier } from '../actors/supervisors/notifier.js';
import { askReplication } from '../actors/supervisors/replication.js';
import { askStore } from '../actors/supervisors/store.js';
import type { AnyActorSystem } from '../actors/supervisor.js';
import type { Clock } from '../clock.js';
import { lookupHash } from '../crypto/index.js';
import { serverNameOfUserId } from '../federation/index.js';
import type { ServerIdentity } from '../identity.js';
import type { Logger } from '../log.js';

export interface BinderDeps {
  system: AnyActorSystem;
  identity: ServerIdentity;
  clock: Clock;
  log: Logger;
}

export interface Threepid {
  medium: string;
  /** normalised: casefolded email, or E.164 digits */
  address: string;
}

export async function bindThreepid(deps: BinderDeps, threepid: Threepid, mxid: string) {
  const destination = serverNameOfUserId(mxid);
  if (!destination) deps.log.warn('binding to a user ID without a valid server name: no homeserver will be told');
  const signed = await askStore(deps.system.get('store') as AnyActorRef, 'ASSOCIATION_BIND', {
    medium: threepid.medium,
    address: threepid.address,
    mxid,
    now: deps.clock.now(),
    hash: lookupHash,
    serverName: deps.identity.serverName,
    sign: deps.identity.sign,
    callbackDestination: destination,
  });
  if (destination) wakeNotifier(deps);
  wakeReplication(deps);
  return signed;
}

/** `false` when that binding did not exist here (the answer is the same: it is gone). */
export async function unbindThreepid(deps: BinderDeps, threepid: Threepid, mxid: string): Promise<boolean> {
  const removed = await askStore(deps.system.get('store') as AnyActorRef, 'ASSOCIATION_UNBIND', {
    medium: threepid.medium,
    address: threepid.address,
    mxid,
    now: deps.clock.now(),
  });
  // the tombstone is in the replication log
  if (removed) wakeReplication(deps);
  return removed;
}

function wakeNotifier(deps: BinderDeps): void {
  // The callback is already stored: a lost wake-up only delays it until the notifier's next look.
  askNotifier(deps.system.get('notifier') as AnyActorRef, 'WAKE', {}).catch((err: unknown) =>
    deps.log.warn({ err }, 'could not wake the notifier'),
  );
}

function wakeReplication(deps: BinderDeps): void {
  // The log row is committed: a lost wake-up only delays the push until the replication tick (10 s).
  askReplication(deps.system.get('replication') as AnyActorRef, 'WAKE', {}).catch((err: unknown) =>
    deps.log.warn({ err }, 'could not wake replication'),
  );
}
