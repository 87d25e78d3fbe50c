/**
 * The reply registry of an actor system: where the answer to an ask goes.
 *
 * An ask event is plain data (`{ type, payload, replyTo, deadline }`): `replyTo` is an id into this registry, which
 * holds the caller's promise and the request's context (src/actors/request-context.ts). The supervisor that takes
 * the request gets the context from here and hands it to its handler, so when the caller gives up (its deadline
 * passed, or its own caller's cancellation aborted) the work the ask started is aborted too, not left running. An
 * answer that comes after that finds no entry and goes nowhere.
 */
import type { AnyActorRef } from 'xstate';
import { ChurnMap } from '../util/churn-map.js';
import { RequestContext, type Cancellation } from './request-context.js';

/** The caller stopped waiting: its deadline passed (or its request was cut) before the answer came. */
export class DeadlineExceededError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DeadlineExceededError';
  }
}

/** The system an actor belongs to (xstate's type, whatever its actors). */
export type AnyActorSystem = AnyActorRef['system'];

interface Pending {
  resolve(value: unknown): void;
  reject(error: unknown): void;
  context: RequestContext;
  timer: NodeJS.Timeout;
  /** removes the listener on the caller's own cancellation */
  detach: (() => void) | null;
}

interface OpenReply<T> {
  id: string;
  promise: Promise<T>;
}

class ReplyRegistry {
  private next = 0;
  private readonly pending = new ChurnMap<Pending>();

  /**
   * A new reply channel. `deadline` (Date.now() time) ends it with `onDeadline()`'s error; the caller's `cancel`
   * ends it with that one's reason. Either way the request's own context is aborted.
   */
  open<T>(deadline: number, onDeadline: () => Error, cancel?: Cancellation): OpenReply<T> {
    const id = String(++this.next);
    const context = new RequestContext(deadline);
    const promise = new Promise<T>((resolve, reject) => {
      const end = (error: Error) => {
        if (!this.pending.has(id)) return;
        this.settle(id);
        context.abort(error);
        reject(error);
      };
      const timer = setTimeout(() => end(onDeadline()), Math.max(0, deadline - Date.now()));
      timer.unref();
      const detach = cancel && !cancel.aborted ? cancel.onAbort(end) : null;
      this.pending.set(id, { resolve, reject, context, timer, detach });
      if (cancel?.reason) end(cancel.reason);
    });
    return { id, promise };
  }

  /** The context of a request still awaited; undefined once its caller stopped waiting (or it was answered). */
  context(id: string): RequestContext | undefined {
    return this.pending.get(id)?.context;
  }

  resolve(id: string, value: unknown): void {
    const entry = this.settle(id);
    entry?.resolve(value);
  }

  reject(id: string, error: unknown): void {
    const entry = this.settle(id);
    entry?.reject(error);
  }

  /** Ends every request still awaited with `error`, aborting the work each started (shutdown: nothing is left running). */
  abortAll(error: Error): void {
    for (const [id, entry] of [...this.pending]) {
      this.settle(id);
      entry.context.abort(error);
      entry.reject(error);
    }
  }

  /** Requests awaiting an answer (bounded by their deadlines). */
  get size(): number {
    return this.pending.size;
  }

  private settle(id: string): Pending | undefined {
    const entry = this.pending.get(id);
    if (!entry) return undefined;
    this.pending.delete(id);
    clearTimeout(entry.timer);
    entry.detach?.();
    return entry;
  }
}

const registries = new WeakMap<AnyActorSystem, ReplyRegistry>();

/** The reply registry of the system an actor belongs to (one per system). */
export function repliesOf(system: AnyActorSystem): ReplyRegistry {
  let registry = registries.get(system);
  if (!registry) registries.set(system, (registry = new ReplyRegistry()));
  return registry;
}
