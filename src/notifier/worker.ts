/**
 * The callback worker: works off the `callback_outbox` for the notifier supervisor.
 *
 * It wakes up when told (a bind recorded a callback: WAKE), at start-up, and on a timer for the earliest due row.
 * Each round claims due rows through the store actor (atomically, with a lease), then runs one callback machine
 * per claimed row, whose `deliver` actor POSTs the body, and records the outcome through the store actor.
 *
 * - Bounded concurrency, and at most one delivery per destination at a time: a dead homeserver holds one slot
 *   for as long as its request takes, and never delays callbacks to other homeservers.
 * - Due times are stored; the in-memory timer only says when to look again, so a restart loses nothing: the
 *   start-up round finds whatever is due, and rows a killed process had claimed come back when their lease ends.
 * - Shutdown (drain) lets running deliveries finish for a moment, then gives the rest back (released untried),
 *   so nothing is lost and nothing waits for a lease to run out.
 */
import { createActor, fromPromise, type Actor } from 'xstate';
import type { Logger } from '../log.js';
import type { ActorInspect } from '../actors/deps.js';
import {
  callbackMachine,
  type CallbackContext,
  type CallbackEvent,
  type DeliverInput,
  type DeliveryResult,
} from '../machines/callback.js';
import type { CallbackCounts, CallbackDebugRow, ClaimedCallback, ClaimRequest } from '../store/callbacks.js';

/** The store writes the worker needs, answered by the store actor. */
export interface CallbackStorePort {
  claim(req: ClaimRequest): Promise<ClaimedCallback[]>;
  delivered(id: number, now: number, deleteInviteTokens: boolean): Promise<{ updated: boolean; tokensDeleted: number }>;
  retry(id: number, claimedUntil: number, nextAttemptTs: number, lastError: string): Promise<boolean>;
  abandon(id: number, claimedUntil: number, lastError: string): Promise<boolean>;
  release(id: number, claimedUntil: number): Promise<boolean>;
  purge(now: number): Promise<number>;
}

/** The reads the worker needs, from the store's read facade. */
export interface CallbackReadPort {
  nextDue(excludeDestinations: readonly string[]): Promise<number | null> | number | null;
  counts(): Promise<CallbackCounts> | CallbackCounts;
  list(limit?: number): Promise<CallbackDebugRow[]> | CallbackDebugRow[];
}

/** Sends one callback; resolves with the HTTP status of any answer, throws when no answer came (or `signal` aborted). */
export type DeliverFn = (row: ClaimedCallback, signal: AbortSignal) => Promise<number>;

export interface CallbackWorkerOptions {
  store: CallbackStorePort;
  reads: CallbackReadPort;
  deliver: DeliverFn;
  now: () => number;
  /** the jitter of the backoff: a number in [0, 1) */
  random?: () => number;
  log: Logger;
  /** `[general] delete_tokens_on_bind` */
  deleteInviteTokens: boolean;
  /** deliveries at once (default 8) */
  concurrency?: number;
  /** how long a claim lasts (default 2 min): longer than any delivery can take */
  claimTtlMs?: number;
  /** how long shutdown waits for running deliveries before giving them back (default 2 s) */
  drainGraceMs?: number;
  /** the timer never waits longer than this (default 30 s), so a clock that jumps is noticed */
  maxSleepMs?: number;
  /** how often old rows are purged (default 1 h) */
  purgeEveryMs?: number;
  /** `--inspect` */
  inspect?: ActorInspect;
}

/** The rejection of the `deliver` actor: when it failed and why, for the machine's backoff. */
export class DeliveryError extends Error {
  constructor(
    message: string,
    readonly at: number,
  ) {
    super(message);
    this.name = 'DeliveryError';
  }
}

interface InFlight {
  row: ClaimedCallback;
  actor: Actor<typeof callbackMachine>;
  /** settles once the outcome is recorded (or recording failed) */
  done: Promise<void>;
}

export interface OutboxView {
  counts: CallbackCounts;
  /** rows not delivered yet (pending, delivering, retrying) */
  pending: number;
  /** ids being delivered by this process now */
  inFlight: number[];
  rows: CallbackDebugRow[];
}

const DEFAULTS = {
  concurrency: 8,
  claimTtlMs: 2 * 60_000,
  drainGraceMs: 2_000,
  maxSleepMs: 30_000,
  purgeEveryMs: 60 * 60_000,
};

/** below this the timer does not fire again, so a row that is due but cannot be claimed never spins the loop */
const MIN_SLEEP_MS = 100;

export class CallbackWorker {
  private readonly opts: Required<Omit<CallbackWorkerOptions, 'random' | 'inspect'>> & { random: () => number; inspect?: ActorInspect };
  private readonly inFlight = new Map<number, InFlight>();
  private pumping = false;
  private again = false;
  private draining = false;
  private started = false;
  private timer: NodeJS.Timeout | null = null;
  private purgeTimer: NodeJS.Timeout | null = null;
  /** the latest round, so tests and shutdown can wait for it */
  private round: Promise<void> = Promise.resolve();
  /** aborted at shutdown, after the grace period: the deliveries still running are cut off */
  private readonly cutOff = new AbortController();

  constructor(opts: CallbackWorkerOptions) {
    this.opts = { ...DEFAULTS, random: Math.random, ...opts };
  }

  /** First round (whatever is due since before a restart) and the purge timer. */
  start(): void {
    if (this.started || this.draining) return;
    this.started = true;
    this.purge();
    this.purgeTimer = setInterval(() => this.purge(), this.opts.purgeEveryMs);
    this.purgeTimer.unref();
    this.wake();
  }

  /** Something may be due: look now. */
  wake(): void {
    if (this.draining) return;
    if (this.pumping) {
      this.again = true;
      return;
    }
    this.pumping = true;
    this.round = this.pumpRound()
      .catch((err: unknown) => {
        this.opts.log.warn({ err }, 'callback worker: could not claim callbacks; retrying shortly');
        this.sleep(5_000);
      })
      .finally(() => {
        this.pumping = false;
        if (this.again) {
          this.again = false;
          this.wake();
        }
      });
  }

  /** The ids of the callbacks being delivered by this process now. */
  inFlightIds(): number[] {
    return [...this.inFlight.keys()];
  }

  async view(limit = 100): Promise<OutboxView> {
    const [counts, rows] = await Promise.all([this.opts.reads.counts(), this.opts.reads.list(limit)]);
    return {
      counts,
      pending: counts.pending + counts.delivering + counts.retrying,
      inFlight: this.inFlightIds(),
      rows,
    };
  }

  /**
   * Shutdown: no new claims; running deliveries get `drainGraceMs` to finish and have their outcome recorded,
   * the others are released (claim cleared, the attempt not counted). Resolves when every row is recorded.
   */
  async drain(): Promise<void> {
    this.draining = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.purgeTimer) clearInterval(this.purgeTimer);
    this.timer = this.purgeTimer = null;
    await this.round.catch(() => undefined);
    const running = () => [...this.inFlight.values()];
    if (this.inFlight.size > 0) {
      let graceTimer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled(running().map((f) => f.done)),
        new Promise<void>((resolve) => {
          graceTimer = setTimeout(resolve, this.opts.drainGraceMs);
        }),
      ]);
      clearTimeout(graceTimer);
    }
    const left = running();
    // What still runs is cut off (its request aborted), and given back untried.
    this.cutOff.abort();
    for (const f of left) f.actor.send({ type: 'RELEASE' });
    await Promise.allSettled(left.map((f) => f.done));
  }

  private async pumpRound(): Promise<void> {
    const { concurrency, claimTtlMs } = this.opts;
    for (;;) {
      if (this.draining) return;
      const free = concurrency - this.inFlight.size;
      // every slot busy: each delivery that ends wakes the worker again
      if (free <= 0) return;
      const now = this.opts.now();
      const rows = await this.opts.store.claim({
        now,
        claimedUntil: now + claimTtlMs,
        limit: free,
        excludeDestinations: this.busyDestinations(),
      });
      for (const row of rows) this.run(row);
      if (rows.length < free) break;
    }
    await this.scheduleNext();
  }

  private busyDestinations(): string[] {
    return [...new Set([...this.inFlight.values()].map((f) => f.row.destination))];
  }

  /** Sets the timer for the earliest row that is not for a destination being delivered to right now. */
  private async scheduleNext(): Promise<void> {
    if (this.draining) return;
    const due = await this.opts.reads.nextDue(this.busyDestinations());
    if (this.draining) return;
    if (due === null) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      return;
    }
    this.sleep(due - this.opts.now());
  }

  private sleep(ms: number): void {
    if (this.draining) return;
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.min(Math.max(ms, MIN_SLEEP_MS), this.opts.maxSleepMs);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.wake();
    }, delay);
    this.timer.unref();
  }

  private run(row: ClaimedCallback): void {
    const { now, deliver } = this.opts;
    const machine = callbackMachine.provide({
      actors: {
        deliver: fromPromise<DeliveryResult, DeliverInput>(async () => {
          try {
            const status = await deliver(row, this.cutOff.signal);
            return { status, at: now() };
          } catch (err) {
            throw new DeliveryError(err instanceof Error ? err.message : String(err), now());
          }
        }),
      },
    });
    const context: CallbackContext = {
      id: row.id,
      destination: row.destination,
      attempts: row.attempts,
      nextAttemptTs: row.nextAttemptTs,
      lastError: row.lastError,
      lastStatus: null,
      startedAt: null,
      jitter: 0,
      deliveredAt: null,
      outcome: null,
    };
    // A row that failed before resumes in `retrying`; a claimed row whose lease ran out (its worker died) resumes
    // where it was before that claim.
    const value = row.attempts === 0 ? 'pending' : 'retrying';
    const actor = createActor(machine, {
      snapshot: machine.resolveState({ value, context }),
      input: context,
      ...(this.opts.inspect ? { inspect: this.opts.inspect } : {}),
    });

    let settle!: () => void;
    const done = new Promise<void>((resolve) => {
      settle = resolve;
    });
    const entry: InFlight = { row, actor, done };
    this.inFlight.set(row.id, entry);

    let recorded = false;
    const finish = (c: CallbackContext) => {
      if (recorded) return;
      recorded = true;
      void this.record(row, c)
        .catch((err: unknown) => {
          // The claim runs out and the row is tried again: delivery is at least once.
          this.opts.log.error({ err, callback: row.id }, 'callback worker: could not record a callback outcome');
        })
        .finally(() => {
          actor.stop();
          this.inFlight.delete(row.id);
          settle();
          this.wake();
        });
    };
    actor.subscribe({
      next: (snapshot) => {
        if (snapshot.context.outcome !== null) finish(snapshot.context);
      },
      error: (err: unknown) => {
        this.opts.log.error({ err, callback: row.id }, 'callback machine failed');
        finish({ ...context, outcome: 'released' });
      },
    });
    actor.start();
    const event: CallbackEvent = { type: 'DELIVER', now: now(), jitter: this.opts.random() };
    actor.send(event);
    const after = actor.getSnapshot();
    // Refused (not due after all): give the row back untouched.
    if (after.context.outcome === null && !after.matches('delivering')) finish({ ...after.context, outcome: 'released' });
  }

  private async record(row: ClaimedCallback, c: CallbackContext): Promise<void> {
    const { store, log } = this.opts;
    const where = { callback: row.id, destination: row.destination };
    switch (c.outcome) {
      case 'delivered': {
        const { tokensDeleted } = await store.delivered(row.id, c.deliveredAt ?? this.opts.now(), this.opts.deleteInviteTokens);
        log.info({ ...where, attempts: c.attempts + 1, tokensDeleted }, 'homeserver callback delivered');
        return;
      }
      case 'failed': {
        const ok = await store.retry(row.id, row.claimedUntil, c.nextAttemptTs, c.lastError ?? 'failed');
        log.warn(
          { ...where, attempts: c.attempts, nextAttemptTs: c.nextAttemptTs, error: c.lastError, claimLost: !ok },
          'homeserver callback failed; will retry',
        );
        return;
      }
      case 'abandoned': {
        await store.abandon(row.id, row.claimedUntil, c.lastError ?? 'abandoned');
        log.error({ ...where, error: c.lastError }, 'homeserver callback can never be delivered; giving up');
        return;
      }
      case 'released':
      case null:
        await store.release(row.id, row.claimedUntil);
        return;
    }
  }

  private purge(): void {
    this.opts.store.purge(this.opts.now()).then(
      (n) => {
        if (n > 0) this.opts.log.info({ deleted: n }, 'old homeserver callbacks purged');
      },
      (err: unknown) => this.opts.log.warn({ err }, 'could not purge old homeserver callbacks'),
    );
  }
}
