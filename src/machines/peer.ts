/**
 * One replication peer, as seen by the server that pushes to it:
 *
 *   idle ──WAKE──▶ pushing ──done: push [moreToPush]──▶ pushing (the next batch)
 *                    │    └──done: push──▶ idle
 *                    └──error: push──▶ backingOff ──RETRY──▶ pushing
 *
 * `pushing` runs the `push` actor, which the replication supervisor provides: it reads up to a batch of the
 * replication log after the cursor, signs each row, POSTs the batch to the peer over mutual TLS and, only after
 * the peer's 2xx, stores the new cursor. An empty log after the cursor resolves at once with nothing sent.
 *
 * The machine is pure: no timers, no I/O, no randomness. Time and the jitter's random number come with the
 * `push` actor's result or failure; the backoff is a delay in the context (`retryDelayMs`, and `nextRetryTs` for
 * people to read) that the supervisor waits before it sends RETRY. The backoff lives in memory only: the cursor
 * (`peers.lastSentVersion`) is the durable part, and after a restart everything after it is pushed again, which
 * the receiver ignores for rows it already has.
 *
 * Decisions:
 * - WAKE (a local bind or unbind, or the 10-second tick) starts a push from `idle`. While pushing it only notes
 *   that more may have arrived (`dirty`), so the push that is under way is followed by another look. While
 *   backing off it is ignored: a dead peer is not hammered by every bind; RETRY ends the wait.
 * - The backoff doubles from 1 s up to 5 min, minus up to half by the jitter, so that peers (and many servers
 *   pushing to one peer that came back) do not retry in step. A success resets it.
 */
import { assign, fromPromise, setup } from 'xstate';
import { errorMessage } from '../util/error-message.js';

/**
 * The machine host's version for peer machines. A peer machine is never stored (its cursor is the `peers` row, its
 * backoff lives in memory), so no row carries this version and nothing is migrated by it.
 */
export const PEER_MACHINE_VERSION = 1;

/** Sydent's ASSOCIATIONS_PUSH_LIMIT: associations per push. */
export const PUSH_BATCH_SIZE = 100;
/** The first retry waits up to 1 s; each further failure doubles it. */
const PEER_BACKOFF_BASE_MS = 1000;
/** No retry waits longer than 5 minutes. */
export const PEER_BACKOFF_CAP_MS = 5 * 60 * 1000;
/** Up to this fraction of the delay is taken off by the jitter. */
export const PEER_BACKOFF_JITTER = 0.5;

/**
 * The wait after a failure with `failures` failures before it in a row: `min(1 s · 2^failures, 5 min)`, less up
 * to half by `jitter` (a random number in [0, 1)).
 */
export function peerBackoffMs(failures: number, jitter: number): number {
  const nominal = Math.min(PEER_BACKOFF_CAP_MS, PEER_BACKOFF_BASE_MS * 2 ** Math.min(Math.max(failures, 0), 32));
  const j = Math.min(Math.max(Number.isFinite(jitter) ? jitter : 0, 0), 1);
  return Math.max(1, Math.round(nominal * (1 - PEER_BACKOFF_JITTER * j)));
}

export interface PeerContext {
  /** the peer's server name (its `peers.name`) */
  name: string;
  /** the last local association id the peer acknowledged (`peers.lastSentVersion`, 0 for none) */
  cursor: number;
  /** failed pushes in a row */
  failures: number;
  lastError: string | null;
  lastErrorAt: number | null;
  /** the status of the last answer, if the last push got one */
  lastStatus: number | null;
  /** when the peer last acknowledged a batch (`peers.lastPokeSucceededAt`) */
  lastSuccessAt: number | null;
  /** while backing off: how long the supervisor waits before RETRY */
  retryDelayMs: number | null;
  /** while backing off: when the next attempt is due (for people; the supervisor's timer is what counts) */
  nextRetryTs: number | null;
  /** associations the peer acknowledged since this actor started */
  pushed: number;
  /** batches the peer acknowledged since this actor started */
  batches: number;
  /** woken while a push was under way: look again when it ends */
  dirty: boolean;
}

export type PeerInput = Pick<PeerContext, 'name' | 'cursor' | 'lastSuccessAt'>;

export type PeerEvent =
  /** there may be new log rows (a local bind or unbind, or the periodic tick) */
  | { type: 'WAKE' }
  /** the backoff is over (or an operator asked): push now */
  | { type: 'RETRY' };

export interface PushInput {
  name: string;
  cursor: number;
}

/** What the `push` actor resolves with. */
export interface PushResult {
  /** associations the peer acknowledged (0: nothing to send) */
  sent: number;
  /** the new cursor: the largest id acknowledged (the old cursor when nothing was sent) */
  lastId: number;
  /** the batch was full: more may be waiting */
  full: boolean;
  /** when the push ended */
  at: number;
}

/** What the `push` actor rejects with (the supervisor's PushError has this shape). */
interface PushFailure {
  message: string;
  /** when the push failed */
  at?: number;
  /** the status of the peer's answer, when it answered */
  status?: number | null;
  /** a random number in [0, 1) for the backoff's jitter */
  jitter?: number;
}

function failureOf(error: unknown): { message: string; at: number | null; status: number | null; jitter: number } {
  if (typeof error === 'object' && error !== null) {
    const e = error as Partial<PushFailure>;
    return {
      message: typeof e.message === 'string' ? e.message : errorMessage(error),
      at: typeof e.at === 'number' ? e.at : null,
      status: typeof e.status === 'number' ? e.status : null,
      jitter: typeof e.jitter === 'number' ? e.jitter : 0,
    };
  }
  return { message: String(error), at: null, status: null, jitter: 0 };
}

const outputOf = (event: unknown): PushResult | undefined => (event as { output?: PushResult }).output;

export const peerMachine = setup({
  types: {
    context: {} as PeerContext,
    events: {} as PeerEvent,
    input: {} as PeerInput,
  },
  actors: {
    // Provided by the replication supervisor: pushes one batch after `cursor` and stores the new cursor after
    // the peer's 2xx. Rejects with a PushFailure.
    push: fromPromise<PushResult, PushInput>(async () => {
      throw new Error('push is provided by the replication supervisor');
    }),
  },
  guards: {
    /** the batch was full, or a wake-up came during the push: there may be more */
    moreToPush: ({ context, event }) => outputOf(event)?.full === true || context.dirty,
  },
  actions: {
    clearDirty: assign({ dirty: false }),
    markDirty: assign({ dirty: true }),
    /** the peer acknowledged the batch: the cursor moves and the backoff is over */
    recordPushed: assign(({ context, event }) => {
      const out = outputOf(event);
      const sent = out?.sent ?? 0;
      return {
        // nothing sent can still move it: another node pushed before this one took over (the shared cursor)
        cursor: out ? Math.max(context.cursor, out.lastId) : context.cursor,
        lastSuccessAt: sent > 0 ? (out?.at ?? context.lastSuccessAt) : context.lastSuccessAt,
        pushed: context.pushed + sent,
        batches: context.batches + (sent > 0 ? 1 : 0),
        lastStatus: sent > 0 ? 200 : context.lastStatus,
        failures: 0,
        retryDelayMs: null,
        nextRetryTs: null,
      };
    }),
    /** the push failed: count it and wait `peerBackoffMs` before the next one */
    recordFailure: assign(({ context, event }) => {
      const f = failureOf((event as { error?: unknown }).error);
      const delay = peerBackoffMs(context.failures, f.jitter);
      const at = f.at ?? context.lastErrorAt ?? 0;
      return {
        failures: context.failures + 1,
        lastError: f.message,
        lastErrorAt: at,
        lastStatus: f.status,
        retryDelayMs: delay,
        nextRetryTs: at + delay,
      };
    }),
  },
}).createMachine({
  id: 'peer',
  context: ({ input }) => ({
    ...input,
    failures: 0,
    lastError: null,
    lastErrorAt: null,
    lastStatus: null,
    retryDelayMs: null,
    nextRetryTs: null,
    pushed: 0,
    batches: 0,
    dirty: false,
  }),
  initial: 'idle',
  states: {
    idle: {
      description: 'the peer has everything we know of',
      on: { WAKE: { target: 'pushing' } },
    },
    pushing: {
      description: 'a batch after the cursor is on its way to the peer',
      entry: 'clearDirty',
      invoke: {
        id: 'push',
        src: 'push',
        input: ({ context }) => ({ name: context.name, cursor: context.cursor }),
        onDone: [
          { guard: 'moreToPush', target: 'pushing', reenter: true, actions: 'recordPushed' },
          { target: 'idle', actions: 'recordPushed' },
        ],
        onError: { target: 'backingOff', actions: 'recordFailure' },
      },
      on: { WAKE: { actions: 'markDirty' } },
    },
    backingOff: {
      description: 'the last push failed; pushing again after retryDelayMs',
      on: { RETRY: { target: 'pushing' } },
    },
  },
});

export const PEER_STATES = ['idle', 'pushing', 'backingOff'] as const;
