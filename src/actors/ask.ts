import type { AnyActorRef } from 'xstate';

/** The reply channel an `ask` puts into its event; the receiving actor settles it exactly once. */
export interface Reply<T = unknown> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

export interface AskableEvent {
  type: string;
  replyTo?: Reply;
}

export class AskTimeoutError extends Error {
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

export const DEFAULT_ASK_TIMEOUT_MS = 10_000;

/**
 * Sends `event` to `ref` with a reply channel and waits for the answer: how handlers talk to supervisors.
 * Rejects with AskTimeoutError when no answer comes in time, and at once when the actor is not running.
 */
export function ask<T>(
  ref: AnyActorRef | undefined,
  event: { type: string } & Record<string, unknown>,
  timeoutMs: number = DEFAULT_ASK_TIMEOUT_MS,
): Promise<T> {
  const target = ref?.id ?? 'actor';
  if (!ref || ref.getSnapshot().status !== 'active') return Promise.reject(new ActorStoppedError(target));
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      reject(new AskTimeoutError(target, event.type, timeoutMs));
    }, timeoutMs);
    const replyTo: Reply<T> = {
      resolve(value) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(value);
      },
      reject(error) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(error);
      },
    };
    ref.send({ ...event, replyTo });
  });
}
