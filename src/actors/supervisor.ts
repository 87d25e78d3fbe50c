import PQueue from 'p-queue';
import { fromCallback } from 'xstate';
import type { AskEvent } from './ask.js';
import { environmentOf, type SupervisorEnv } from './facade.js';
import { DeadlineExceededError, repliesOf } from './replies.js';
import type { RequestContext } from './request-context.js';

export type { RequestContext } from './request-context.js';

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

interface ChildActor {
  id: string;
  state: string;
}

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

// The payload type is each handler's own first parameter: `never` here lets the table hold handlers of any payload.
type Handler<TResource> = (payload: never, resource: TResource, request: RequestContext) => unknown;

/** How the supervisor calls a handler: the facade typed its payload (src/actors/facade.ts), the event carries it as data. */
type AnyPayloadHandler<TResource> = (payload: unknown, resource: TResource, request: RequestContext) => unknown;

export type Handlers<TResource> = Record<string, Handler<TResource>>;

interface SupervisorSpec<TInput, TResource, THandlers extends Handlers<TResource> = Handlers<TResource>> {
  /** how many requests run at once */
  concurrency: number;
  /** acquires the resource this supervisor alone owns; `env` reaches the other supervisors through their facades */
  open(input: TInput, env: SupervisorEnv): TResource;
  /** releases it, after the queue has drained */
  close?(resource: TResource): void | Promise<void>;
  /** each request type (a facade's method name) and its handler; the handler's first parameter types the payload */
  handlers: THandlers;
  /** the live child actors, for the debug endpoint's actor tree (walked, never copied whole) */
  children?(resource: TResource): Iterable<ChildActor> | Promise<Iterable<ChildActor>>;
  /**
   * the children counted by state, kept as they change, where there can be many (one per live session): then STATS
   * reads them instead of walking `children`, and a page of children stops walking at its end
   */
  childCounts?(resource: TResource): ChildSummary;
  /** request types answered at once, outside the queue (cheap in-memory checks that must not wait behind I/O) */
  immediate?: readonly (keyof THandlers & string)[];
}

/** The built-in requests every supervisor answers: STATS, CHILDREN (`{ offset, limit }`) and DRAIN. */
export const CONTROL = { stats: 'STATS', children: 'CHILDREN', drain: 'DRAIN' } as const;

/**
 * A supervisor is an actor that owns one resource and serves requests against it through a queue.
 * Built-in requests: STATS and CHILDREN (a page of the child actors), answered at once, and DRAIN (stop taking
 * work, finish the queue, close the resource), which is how shutdown stops supervisors in order. A request whose
 * caller stopped waiting while it was queued is not run.
 */
export function supervisor<TInput, TResource, THandlers extends Handlers<TResource>>(
  id: string,
  spec: SupervisorSpec<TInput, TResource, THandlers>,
) {
  return fromCallback<AskEvent, TInput>(({ input, receive, system }) => {
    // A throw here fails the system's start (ActorSystem.start reports it), the others already open are closed.
    const resource = spec.open(input, environmentOf(system));
    const replies = repliesOf(system);
    // Without a bound (the store: its engine orders the writes) a request runs as it arrives: a queue would only add
    // its own work to every ask.
    const queue = Number.isFinite(spec.concurrency) ? new PQueue({ concurrency: spec.concurrency }) : null;
    const unqueued = new Unqueued();
    let handled = 0;
    let failed = 0;
    let draining: Promise<void> | null = null;
    let closing: Promise<void> | null = null;
    const closeOnce = (): Promise<void> => (closing ??= Promise.resolve().then(() => spec.close?.(resource)));

    const stats = async (): Promise<SupervisorStats> => ({
      queued: queue?.size ?? 0,
      running: queue?.pending ?? unqueued.running,
      handled,
      failed,
      draining: draining !== null,
      children: spec.childCounts ? spec.childCounts(resource) : summarise((await spec.children?.(resource)) ?? []),
    });

    const drain = async (): Promise<void> => {
      await (queue ? queue.onIdle() : unqueued.onIdle());
      await closeOnce();
    };

    const answer = (replyTo: string, work: () => unknown): void => {
      let result: unknown;
      try {
        result = work();
      } catch (error) {
        failed++;
        replies.reject(replyTo, error);
        return;
      }
      Promise.resolve(result).then(
        (value) => {
          handled++;
          replies.resolve(replyTo, value);
        },
        (error: unknown) => {
          failed++;
          replies.reject(replyTo, error);
        },
      );
    };

    receive((event) => {
      const { replyTo } = event;
      const request = replies.context(replyTo);
      // Its caller has stopped waiting: nobody needs the answer.
      if (!request) return;
      const payload = (event.payload ?? {}) as Record<string, unknown>;
      if (event.type === CONTROL.stats) {
        stats().then(
          (s) => replies.resolve(replyTo, s),
          (error: unknown) => replies.reject(replyTo, error),
        );
        return;
      }
      if (event.type === CONTROL.children) {
        Promise.resolve(spec.children?.(resource) ?? []).then(
          (all) =>
            replies.resolve(
              replyTo,
              page(
                all,
                Number(payload['offset'] ?? 0),
                Number(payload['limit'] ?? 100),
                spec.childCounts?.(resource).total,
              ),
            ),
          (error: unknown) => replies.reject(replyTo, error),
        );
        return;
      }
      if (event.type === CONTROL.drain) {
        draining ??= drain();
        draining.then(
          () => replies.resolve(replyTo, undefined),
          (error: unknown) => replies.reject(replyTo, error),
        );
        return;
      }
      if (draining) {
        replies.reject(replyTo, new SupervisorClosedError(id));
        return;
      }
      const handler = Object.hasOwn(spec.handlers, event.type)
        ? (spec.handlers[event.type] as AnyPayloadHandler<TResource>)
        : undefined;
      if (!handler) {
        replies.reject(replyTo, new UnknownRequestError(id, event.type));
        return;
      }
      if (spec.immediate?.includes(event.type)) {
        answer(replyTo, () => handler(payload, resource, request));
        return;
      }
      const run = async (): Promise<void> => {
        if (request.aborted || Date.now() >= event.deadline) {
          // Its time ran out in the queue: not started at all.
          failed++;
          replies.reject(replyTo, new DeadlineExceededError(`${id}: ${event.type} waited past its deadline`));
          return;
        }
        try {
          const value = await handler(payload, resource, request);
          handled++;
          replies.resolve(replyTo, value);
        } catch (error) {
          failed++;
          replies.reject(replyTo, error);
        }
      };
      if (queue) void queue.add(run);
      else unqueued.track(run());
    });

    return () => {
      // Stopped without a finished DRAIN (a crash path, a drain that ran out of time, or another supervisor that failed
      // to open): the resource is released all the same.
      closeOnce().catch(() => undefined);
    };
  });
}

/** The requests of a supervisor without a queue: counted while they run, so a drain can wait for the last. */
class Unqueued {
  running = 0;
  private idle: (() => void)[] = [];

  track(work: Promise<void>): void {
    this.running++;
    void work.finally(() => {
      if (--this.running > 0) return;
      const waiting = this.idle;
      this.idle = [];
      for (const resolve of waiting) resolve();
    });
  }

  onIdle(): Promise<void> {
    return this.running === 0 ? Promise.resolve() : new Promise((resolve) => this.idle.push(resolve));
  }
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

/** `limit` children from `offset` on; with the `total` known, the walk ends with the page. */
function page(children: Iterable<ChildActor>, offset: number, limit: number, total?: number): ChildPage {
  const out: ChildActor[] = [];
  let seen = 0;
  for (const c of children) {
    if (seen >= offset && out.length < limit) out.push(c);
    seen++;
    if (total !== undefined && out.length >= limit) break;
  }
  return { total: total ?? seen, children: out };
}
