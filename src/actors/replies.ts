/**
 * The reply registry of an actor system: where the answer to an ask goes.
 *
 * An ask event is plain data (`{ type, payload, replyTo, deadline }`): `replyTo` is an id into this registry, which
 * holds the caller's promise and an AbortController. The supervisor that takes the request gets the controller's
 * signal from here and hands it to its handler, so when the caller gives up (its deadline passed, or its own signal
 * aborted) the work the ask started is aborted too, not left running. An answer that comes after that finds no
 * entry and goes nowhere.
 */
import type { AnyActorRef } from 'xstate';
import { ChurnMap } from '../util/churn-map.js';

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
  controller: AbortController;
  timer: NodeJS.Timeout;
  /** removes the listener on the caller's own signal */
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
   * A new reply channel. `deadline` (Date.now() time) ends it with `onDeadline()`'s error; the caller's `signal`
   * ends it with that signal's reason. Either way the request's own signal is aborted.
   */
  open<T>(deadline: number, onDeadline: () => Error, signal?: AbortSignal): OpenReply<T> {
    const id = String(++this.next);
    const controller = new AbortController();
    const promise = new Promise<T>((resolve, reject) => {
      const end = (error: Error) => {
        if (!this.pending.has(id)) return;
        this.settle(id);
        controller.abort(error);
        reject(error);
      };
      const timer = setTimeout(() => end(onDeadline()), Math.max(0, deadline - Date.now()));
      timer.unref();
      let detach: (() => void) | null = null;
      if (signal) {
        const onAbort = () => end(abortReason(signal));
        signal.addEventListener('abort', onAbort, { once: true });
        detach = () => signal.removeEventListener('abort', onAbort);
      }
      this.pending.set(id, { resolve, reject, controller, timer, detach });
      if (signal?.aborted) end(abortReason(signal));
    });
    return { id, promise };
  }

  /** The signal of a request still awaited; undefined once its caller stopped waiting (or it was answered). */
  signal(id: string): AbortSignal | undefined {
    return this.pending.get(id)?.controller.signal;
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
      entry.controller.abort(error);
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

function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new DeadlineExceededError('the request was cancelled');
}

const registries = new WeakMap<AnyActorSystem, ReplyRegistry>();

/** The reply registry of the system an actor belongs to (one per system). */
export function repliesOf(system: AnyActorSystem): ReplyRegistry {
  let registry = registries.get(system);
  if (!registry) registries.set(system, (registry = new ReplyRegistry()));
  return registry;
}
