import type { AnyActorRef } from 'xstate';
import { statusOf } from './actor-ref.js';
import { DeadlineExceededError, repliesOf } from './replies.js';
import type { Cancellation } from './request-context.js';

export { DeadlineExceededError } from './replies.js';

/**
 * An ask as it travels: plain data. `replyTo` names the caller's entry in the system's reply registry
 * (src/actors/replies.ts); `deadline` (Date.now() time) is when the caller stops waiting.
 */
export interface AskEvent<TPayload = unknown> {
  type: string;
  payload: TPayload;
  replyTo: string;
  deadline: number;
}

/** How long a caller waits, and what else may make it stop: carried by every ask and every facade call. */
export interface CallOptions {
  /**
   * the caller's own cancellation (a request's from the HTTP edge, or that of the ask that started this one: a
   * handler passes its RequestContext as the options, which carries it here)
   */
  cancel?: Cancellation;
  /** Date.now() time by which an answer is needed */
  deadline?: number;
  /** or at most this long from now (the earlier of the two wins); default DEFAULT_ASK_TIMEOUT_MS without a deadline */
  timeoutMs?: number;
}

/** No answer by the ask's deadline: the work it started has been aborted. */
export class AskTimeoutError extends DeadlineExceededError {
  constructor(
    readonly target: string,
    readonly eventType: string,
    readonly timeoutMs: number,
  ) {
    super(`${target} did not answer ${eventType} within ${timeoutMs} ms`);
    this.name = 'AskTimeoutError';
  }
}

export class ActorStoppedError extends Error {
  constructor(readonly target: string) {
    super(`${target} is not running`);
    this.name = 'ActorStoppedError';
  }
}

const DEFAULT_ASK_TIMEOUT_MS = 10_000;

/** The Date.now() time an ask with these options gives up. */
function deadlineOf(opts: CallOptions = {}): number {
  const byTimeout =
    opts.timeoutMs !== undefined || opts.deadline === undefined
      ? Date.now() + (opts.timeoutMs ?? DEFAULT_ASK_TIMEOUT_MS)
      : Infinity;
  return Math.min(opts.deadline ?? Infinity, byTimeout);
}

/**
 * Sends `type` with `payload` to `ref` and waits for the answer. Rejects at once when the actor is not running,
 * and with AskTimeoutError at the deadline (or with the reason of the caller's cancellation); either way the
 * request's context is aborted, so the work it started stops. Callers use the typed facades (src/actors/facade.ts).
 */
export function ask<T>(
  ref: AnyActorRef | undefined,
  type: string,
  payload: unknown,
  opts: CallOptions = {},
): Promise<T> {
  const target = ref?.id ?? 'actor';
  if (!ref || statusOf(ref) !== 'active') return Promise.reject(new ActorStoppedError(target));
  const started = Date.now();
  const deadline = deadlineOf(opts);
  const { id, promise } = repliesOf(ref.system).open<T>(
    deadline,
    () => new AskTimeoutError(target, type, Math.max(0, Math.round(deadline - started))),
    opts.cancel,
  );
  const event: AskEvent = { type, payload, replyTo: id, deadline };
  ref.send(event);
  return promise;
}
