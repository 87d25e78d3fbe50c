/**
 * Typed access to the actors of a system. xstate types `system.get()` and an untyped ref's snapshot as `any`; these
 * are the one place that says what they are.
 */
import type { AnyActorRef, Snapshot } from 'xstate';
import type { AnyActorSystem } from './replies.js';

/** The actor registered under `systemId`; undefined when none is (it stopped, or never started). */
export function actorOf(system: AnyActorSystem, systemId: string): AnyActorRef | undefined {
  const ref: unknown = system.get(systemId);
  return isActorRef(ref) ? ref : undefined;
}

function isActorRef(value: unknown): value is AnyActorRef {
  return typeof value === 'object' && value !== null && 'send' in value && 'getSnapshot' in value;
}

/** An actor's status (`active` until it stops); `stopped` when there is no actor. */
export function statusOf(ref: AnyActorRef | undefined): Snapshot<unknown>['status'] {
  return ref ? (ref.getSnapshot() as Snapshot<unknown>).status : 'stopped';
}
