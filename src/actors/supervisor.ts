import PQueue from 'p-queue';
import { fromCallback, type ActorSystem } from 'xstate';
import type { AnyActorRef } from 'xstate';
import { settlesBy } from '../util/settles-by.js';
import { ask, type AskableEvent, type Reply } from './ask.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyActorSystem = ActorSystem<any>;

/** What the debug endpoint shows of a supervisor. */
export interface SupervisorStats {
  /** requests waiting for their turn */
  queued: number;
  /** requests being worked on */
  running: number;
  handled: number;
  failed: number;
  draining: boolean;
  /** the actors this supervisor runs (session, callback, peer actors), counted per state: one entry per state, not per actor */
  children: ChildSummary;
}

export interface ChildSummary {
  total: number;
  byState: Record<string, number>;
}

/** One page of a supervisor's child actors (the CHILDREN request). */
export interface ChildPage {
  total: number;
  children: ChildActor[];
}

export interface ChildActor {
  id: string;
  state: string;
}

/** What a DRAIN answers. */
export interface DrainReport {
  /** requests given up on (ABANDON, or still queued or running at the deadline), answered SupervisorClosedError */
  abandoned: number;
  /** false: the resource was still closing at the deadline (left to finish on its own) */
  closed: boolean;
  /** what closing the resource threw (with a deadline; without one, DRAIN is rejected with it) */
  closeError?: unknown;
}

/** How long past a drain's deadline closing the resource may take (the store's closes the database). */
export const CLOSE_GRACE_MS = 300;

export class SupervisorClosedError extends Error {
  constructor(id: string) {
    super(`${id} is shutting down`);
    this.name = 'SupervisorClosedError';
  }
}

export class UnknownRequestError extends Error {
  constructor(id: string, type: string) {
    super(`${id} does not handle ${type}`);
    this.name = 'UnknownRequestError';
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Handler<TResource> = (event: any, resource: TResource, system: AnyActorSystem) => unknown;

export type Handlers<TResource> = Record<string, Handler<TResource>>;

export interface SupervisorSpec<TInput, TResource, THandlers extends Handlers<TResource> = Handlers<TResource>> {
  /** how many requests run at once; 1 serialises them (the store's writes) */
  concurrency: number;
  /** acquires the resource this supervisor alone owns */
  open(input: TInput, system: AnyActorSystem): TResource;
  /** releases it, after the queue has drained */
  close?(resource: TResource): void | Promise<void>;
  /** each request type and its handler; the handler's first parameter types the request's payload */
  handlers: THandlers;
  /** the live child actors, for the debug endpoint's actor tree (walked, never copied whole) */
  children?(resource: TResource): Iterable<ChildActor>;
  /** request types answered at once, outside the queue (cheap in-memory checks that must not wait behind I/O) */
  immediate?: readonly (keyof THandlers & string)[];
}

/**
 * A supervisor is an actor that owns one resource and serves requests against it through a queue.
 * Built-in requests: STATS and CHILDREN (`{ offset, limit }`: a page of the child actors), answered at once, and
 * DRAIN (stop taking work, finish the queue, close the resource; with `until`, epoch ms, what is left then is
 * abandoned), which is how shutdown stops supervisors in order, and ABANDON (stop taking work, give up on what is
 * queued or running: a shutdown's deadline has passed).
 */
export function supervisor<TInput, TResource, THandlers extends Handlers<TResource>>(
  id: string,
  spec: SupervisorSpec<TInput, TResource, THandlers>,
) {
  return fromCallback<AskableEvent & Record<string, unknown>, TInput>(({ input, receive, system }) => {
    const resource = spec.open(input, system);
    const queue = new PQueue({ concurrency: spec.concurrency });
    let handled = 0;
    let failed = 0;
    let draining: Promise<DrainReport> | null = null;

    const stats = (): SupervisorStats => ({
      queued: queue.size,
      running: queue.pending,
      handled,
      failed,
      draining: draining !== null || refusing,
      children: summarise(spec.children?.(resource) ?? []),
    });

    /** the replies of the requests queued or running, rejected when they are abandoned */
    const pending = new Set<Reply>();
    /** set by ABANDON: new requests are refused, as while draining */
    let refusing = false;
    let abandoned = 0;

    /**
     * Gives up on every request queued or running: its asker is answered SupervisorClosedError (an HTTP request
     * waiting for it is answered 503), a running handler is left to end on its own.
     */
    const abandon = (): void => {
      abandoned += pending.size;
      queue.clear();
      for (const reply of pending) reply.reject(new SupervisorClosedError(id));
      pending.clear();
    };

    /**
     * Finishes the queue, until `until` (epoch ms) when given: what is still queued or running then is abandoned, and
     * the resource is closed all the same, waiting for that until CLOSE_GRACE_MS past `until` at most (the same
     * moment for every supervisor of a shutdown, so that together they end by then).
     */
    const drain = async (until: number | undefined): Promise<DrainReport> => {
      const finished = until === undefined ? await queue.onIdle().then(() => true) : await settlesBy(queue.onIdle(), until);
      if (!finished) abandon();
      if (until === undefined) {
        await spec.close?.(resource);
        return { abandoned, closed: true };
      }
      let closeError: unknown;
      const closing = (async () => spec.close?.(resource))().catch((error: unknown) => {
        closeError = error;
      });
      const closed = await settlesBy(closing, until + CLOSE_GRACE_MS);
      return { abandoned, closed, ...(closeError !== undefined ? { closeError } : {}) };
    };

    receive((event) => {
      const reply = event.replyTo;
      if (event.type === 'STATS') {
        reply?.resolve(stats());
        return;
      }
      if (event.type === 'CHILDREN') {
        reply?.resolve(page(spec.children?.(resource) ?? [], Number(event['offset'] ?? 0), Number(event['limit'] ?? 100)));
        return;
      }
      if (event.type === 'ABANDON') {
        refusing = true;
        abandon();
        reply?.resolve(undefined);
        return;
      }
      if (event.type === 'DRAIN') {
        draining ??= drain(typeof event['until'] === 'number' ? event['until'] : undefined);
        draining.then(
          (report) => reply?.resolve(report),
          (error: unknown) => reply?.reject(error),
        );
        return;
      }
      if (draining || refusing) {
        reply?.reject(new SupervisorClosedError(id));
        return;
      }
      const handler = spec.handlers[event.type] as Handler<TResource> | undefined;
      if (!handler) {
        reply?.reject(new UnknownRequestError(id, event.type));
        return;
      }
      if (spec.immediate?.includes(event.type)) {
        try {
          reply?.resolve(handler(event, resource, system));
          handled++;
        } catch (error) {
          failed++;
          reply?.reject(error);
        }
        return;
      }
      if (reply) pending.add(reply);
      void queue.add(async () => {
        try {
          const result = await handler(event, resource, system);
          handled++;
          reply?.resolve(result);
        } catch (error) {
          failed++;
          reply?.reject(error);
        } finally {
          if (reply) pending.delete(reply);
        }
      });
    });

    return () => {
      // Stopped without a DRAIN (a crash path): release the resource all the same.
      if (!draining) void spec.close?.(resource);
    };
  });
}

function summarise(children: Iterable<ChildActor>): ChildSummary {
  const byState: Record<string, number> = {};
  let total = 0;
  for (const c of children) {
    byState[c.state] = (byState[c.state] ?? 0) + 1;
    total++;
  }
  return { total, byState };
}

function page(children: Iterable<ChildActor>, offset: number, limit: number): ChildPage {
  const out: ChildActor[] = [];
  let total = 0;
  for (const c of children) {
    if (total >= offset && out.length < limit) out.push(c);
    total++;
  }
  return { total, children: out };
}

/**
 * A typed ask: `call<typeof storeHandlers>()(ref, 'ACCOUNT_REGISTER', {...})` checks the payload against the
 * handler's parameter and types the answer from its return value.
 */
export function call<THandlers extends Handlers<never>>() {
  return <K extends keyof THandlers & string>(
    ref: AnyActorRef | undefined,
    type: K,
    payload: Parameters<THandlers[K]>[0],
    timeoutMs?: number,
  ): Promise<Awaited<ReturnType<THandlers[K]>>> => ask(ref, { ...(payload as object), type }, timeoutMs);
}
