/**
 * One homeserver callback (an onbind notification, one `callback_outbox` row) from the bind that recorded it to
 * its delivery:
 *
 *   pending ──DELIVER──▶ delivering ──done: deliver [answered200]──▶ delivered
 *                            │  └─────done (any other status) / error──▶ retrying ──DELIVER [isDue]──▶ delivering
 *                            └──RELEASE (shutdown)──▶ pending | retrying
 *   pending | retrying ──DELIVER [destinationInvalid]──▶ abandoned
 *
 * The machine is pure. Time and the jitter's random number arrive inside events (`DELIVER {now, jitter}`, the
 * delivery's `at`), the delivery is the `deliver` actor the notifier provides, and the next attempt is a stored
 * timestamp (`nextAttemptTs`), never a timer: a row restored after a restart retries exactly as one that stayed
 * in memory.
 *
 * Decisions:
 * - Success is an answer with status exactly 200 (Sydent). Every other answer (2xx other than 200, 3xx, 4xx,
 *   5xx) and every transport failure (DNS, refused, TLS, timeout, too large, blocked by the IP guard) is retried.
 * - The backoff is Sydent's 1 s, 2 s, 4 s, … but capped at 1 h, minus up to 25 % jitter so that many callbacks
 *   to one homeserver that came back do not all arrive at once. Like Sydent, a callback is retried for as long
 *   as it can succeed: at the cap, one attempt an hour costs nothing.
 * - `abandoned` is for callbacks that can never succeed: the destination (the mxid's server part) is not a valid
 *   Matrix server name, so there is nobody to ask. Sydent logs an error and gives up on those too. The bind code
 *   normally does not record such callbacks at all; the guard catches rows that got in anyway.
 */
import { assign, fromPromise, setup } from 'xstate';
import { isValidServerName } from '../matrix/server-name.js';
import { errorMessage } from '../util/error-message.js';

/**
 * The machine host's version for callback machines. A callback machine is rebuilt from its outbox row (attempts,
 * next attempt, last error) and never stored as such, so no row carries this version and nothing is migrated by it.
 */
export const CALLBACK_MACHINE_VERSION = 1;

/** The first retry waits 1 s; each further one doubles (Sydent's `2 ** attempt` seconds). */
export const BACKOFF_BASE_MS = 1000;
/** No retry waits longer than an hour. */
export const BACKOFF_CAP_MS = 60 * 60 * 1000;
/** Up to this fraction is taken off each delay, by the jitter random number. */
export const BACKOFF_JITTER = 0.25;

/**
 * The wait after the failed attempt number `attempts + 1`, i.e. with `attempts` failures before it:
 * `min(1 s · 2^attempts, 1 h)`, less up to 25 % by `jitter` (a random number in [0, 1)). Never more than the
 * nominal delay, so waiting the nominal delay always reaches the next attempt.
 */
export function backoffMs(attempts: number, jitter: number): number {
  const nominal = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(Math.max(attempts, 0), 32));
  const j = Math.min(Math.max(Number.isFinite(jitter) ? jitter : 0, 0), 1);
  return Math.max(1, Math.round(nominal * (1 - BACKOFF_JITTER * j)));
}

/** How the last attempt ended, so the notifier knows what to record; null while an attempt runs or before one. */
type CallbackOutcome = 'delivered' | 'failed' | 'released' | 'abandoned';

export interface CallbackContext {
  /** the outbox row */
  id: number;
  /** the homeserver's server name */
  destination: string;
  /** failed attempts so far */
  attempts: number;
  /** when the next attempt is due (ms) */
  nextAttemptTs: number;
  lastError: string | null;
  /** the last HTTP status received, if any */
  lastStatus: number | null;
  /** when the running attempt started */
  startedAt: number | null;
  /** the random number in [0, 1) of the running attempt, for its backoff */
  jitter: number;
  deliveredAt: number | null;
  outcome: CallbackOutcome | null;
}

export type CallbackInput = Pick<CallbackContext, 'id' | 'destination' | 'attempts' | 'nextAttemptTs' | 'lastError'>;

export type CallbackEvent =
  /** the row was claimed and is due: try it now. `jitter` is a random number in [0, 1). */
  | { type: 'DELIVER'; now: number; jitter: number }
  /** shutdown: give the row back without counting the attempt */
  | { type: 'RELEASE' };

export interface DeliverInput {
  id: number;
  destination: string;
}

/** What the `deliver` actor resolves with: the homeserver answered, with this status, at this time. */
export interface DeliveryResult {
  status: number;
  at: number;
}

/** What the `deliver` actor rejects with when no answer came (the notifier's DeliveryError has this shape). */
interface DeliveryFailure {
  message: string;
  /** when the attempt failed; the attempt's start when unknown */
  at?: number;
}

function failureOf(error: unknown): { message: string; at: number | null } {
  if (typeof error === 'object' && error !== null) {
    const e = error as Partial<DeliveryFailure>;
    return {
      message: typeof e.message === 'string' ? e.message : errorMessage(error),
      at: typeof e.at === 'number' ? e.at : null,
    };
  }
  return { message: String(error), at: null };
}

export const callbackMachine = setup({
  types: {
    context: {} as CallbackContext,
    events: {} as CallbackEvent,
    input: {} as CallbackInput,
  },
  actors: {
    // Provided by the notifier: POSTs the row's body to its destination. Resolves with the status of any answer;
    // rejects (with a DeliveryFailure) when none came.
    deliver: fromPromise<DeliveryResult, DeliverInput>(async () => {
      throw new Error('deliver is provided by the notifier');
    }),
  },
  guards: {
    /** the mxid's server part is no server name: the callback can never be delivered */
    destinationInvalid: ({ context }) => !isValidServerName(context.destination),
    isDue: ({ context, event }) => event.type === 'DELIVER' && event.now >= context.nextAttemptTs,
    /** Sydent's rule: success is status 200 exactly */
    answered200: ({ event }) => (event as { output?: DeliveryResult }).output?.status === 200,
    /** no attempt has failed yet, so a released row is still simply pending */
    neverFailed: ({ context }) => context.attempts === 0,
  },
  actions: {
    startAttempt: assign(({ event }) =>
      event.type === 'DELIVER' ? { startedAt: event.now, jitter: event.jitter, outcome: null } : { outcome: null },
    ),
    recordDelivered: assign(({ context, event }) => {
      const output = (event as { output?: DeliveryResult }).output;
      return {
        outcome: 'delivered' as const,
        lastStatus: output?.status ?? null,
        lastError: null,
        deliveredAt: output?.at ?? context.startedAt,
      };
    }),
    /** an answer other than 200 */
    recordRefusal: assign(({ event }) => {
      const output = (event as { output?: DeliveryResult }).output;
      return {
        outcome: 'failed' as const,
        lastStatus: output?.status ?? null,
        lastError: `HTTP ${output?.status ?? '?'}`,
      };
    }),
    /** no answer at all */
    recordError: assign(({ event }) => ({
      outcome: 'failed' as const,
      lastStatus: null,
      lastError: failureOf((event as { error?: unknown }).error).message,
    })),
    /**
     * The backoff: the next attempt is due `backoffMs(attempts, jitter)` after this one ended, and the failure
     * counts. Runs after recordRefusal / recordError.
     */
    scheduleRetry: assign(({ context, event }) => {
      const output = (event as { output?: DeliveryResult }).output;
      const failedAt = output?.at ?? failureOf((event as { error?: unknown }).error).at;
      const endedAt = failedAt ?? context.startedAt ?? context.nextAttemptTs;
      return {
        nextAttemptTs: endedAt + backoffMs(context.attempts, context.jitter),
        attempts: context.attempts + 1,
        startedAt: null,
      };
    }),
    releaseAttempt: assign({ outcome: 'released' as const, startedAt: null }),
    recordInvalidDestination: assign(({ context }) => ({
      outcome: 'abandoned' as const,
      lastError: `not a valid Matrix server name: ${JSON.stringify(context.destination)}`,
    })),
  },
}).createMachine({
  id: 'callback',
  context: ({ input }) => ({
    ...input,
    lastStatus: null,
    startedAt: null,
    jitter: 0,
    deliveredAt: null,
    outcome: null,
  }),
  initial: 'pending',
  states: {
    pending: {
      description: 'recorded by a bind, never tried',
      on: {
        DELIVER: [
          { guard: 'destinationInvalid', target: 'abandoned', actions: 'recordInvalidDestination' },
          { target: 'delivering', actions: 'startAttempt' },
        ],
      },
    },
    delivering: {
      description: 'claimed by a notifier, the POST is under way',
      invoke: {
        id: 'deliver',
        src: 'deliver',
        input: ({ context }) => ({ id: context.id, destination: context.destination }),
        onDone: [
          { guard: 'answered200', target: 'delivered', actions: 'recordDelivered' },
          { target: 'retrying', actions: ['recordRefusal', 'scheduleRetry'] },
        ],
        onError: { target: 'retrying', actions: ['recordError', 'scheduleRetry'] },
      },
      on: {
        RELEASE: [
          { guard: 'neverFailed', target: 'pending', actions: 'releaseAttempt' },
          { target: 'retrying', actions: 'releaseAttempt' },
        ],
      },
    },
    retrying: {
      description: 'failed; tried again at nextAttemptTs',
      on: {
        DELIVER: [
          { guard: 'destinationInvalid', target: 'abandoned', actions: 'recordInvalidDestination' },
          { guard: 'isDue', target: 'delivering', actions: 'startAttempt' },
        ],
      },
    },
    delivered: {
      description: 'the homeserver answered 200',
      type: 'final',
    },
    abandoned: {
      description: 'can never be delivered (no valid server name)',
      type: 'final',
    },
  },
});

export const CALLBACK_STATES = ['pending', 'delivering', 'retrying', 'delivered', 'abandoned'] as const;
