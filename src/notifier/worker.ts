/**
 * The callback worker: works off the `callback_outbox` for the notifier supervisor.
 *
 * It wakes up when told (a bind recorded a callback: WAKE), at start-up, and on a timer for the earliest due row.
 * Each round claims due rows through the store actor (atomically, with a lease: the record that the row is being
 * delivered), then runs one callback machine per claimed row on the machine host (actors/machine-host.ts), whose
 * `deliver` actor POSTs the body; the host records the outcome through the store actor.
 *
 * - Bounded concurrency, and at most one delivery per destination at a time: a dead homeserver holds one slot
 *   for as long as its request takes, and never delays callbacks to other homeservers.
 * - Due times are stored; the in-memory timer only says when to look again, so a restart loses nothing: the
 *   start-up round finds whatever is due, and rows a killed process had claimed come back when their lease ends.
 * - Shutdown (drain) lets running deliveries finish for a moment, then gives the rest back (released untried),
 *   so nothing is lost and nothing waits for a lease to run out.
 */
import { fromPromise } from 'xstate';
import type { Logger } from '../log.js';
import type { ActorInspect } from '../actors/deps.js';
import {
  MachineHost,
  type InvokedPromise,
  type MachineWrite,
  type RowExpectation,
  type StoredMachine,
} from '../actors/machine-host.js';
import {
  CALLBACK_MACHINE_VERSION,
  callbackMachine,
  type CallbackContext,
  type DeliverInput,
  type DeliveryResult,
} from '../machines/callback.js';
import type { CallbackCounts, CallbackDebugRow, ClaimedCallback, ClaimRequest } from '../store/callbacks.js';
import { errorMessage } from '../util/error-message.js';

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

/**
 * After an attempt on a homeserver fails, its other rows wait until the failed row's own next attempt, and at most
 * this long (a row's first backoff), before the next attempt on it. Each row keeps its own schedule, which this can
 * only delay by as much: a homeserver that is down is tried about once a second, rather than once after another for
 * as long as rows of it are due.
 */
export const DESTINATION_PAUSE_MS = 1_000;

export class CallbackWorker {
  private readonly opts: Required<Omit<CallbackWorkerOptions, 'random' | 'inspect'>> & {
    random: () => number;
    inspect?: ActorInspect;
  };
  private readonly inFlight = new Map<number, InFlight>();
  /** homeservers whose last attempt failed, until when they are left alone (pruned as they run out) */
  private readonly paused = new Map<string, number>();
  private readonly machines: MachineHost<typeof callbackMachine, number>;
  private pumping = false;
  /** a wake is waiting for the end of the turn */
  private wakeQueued = false;
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
    const { now, deliver } = this.opts;
    const deliverRow = async ({ input }: { input: DeliverInput }) => {
      try {
        // Cut off at shutdown, and when the claim runs out: past it another node may deliver the row too.
        const signal = AbortSignal.any([this.cutOff.signal, AbortSignal.timeout(this.opts.claimTtlMs)]);
        const status = await deliver(this.inFlight.get(input.id)!.row, signal);
        return { status, at: now() };
      } catch (err) {
        throw new DeliveryError(errorMessage(err), now());
      }
    };
    const machine = callbackMachine.provide({
      actors: { deliver: fromPromise<DeliveryResult, DeliverInput>(deliverRow) },
    });
    this.machines = new MachineHost<typeof callbackMachine, number>({
      name: 'callback',
      machine,
      version: CALLBACK_MACHINE_VERSION,
      store: { load: async (id) => this.load(id), save: (id, write, expected) => this.record(id, write, expected) },
      now,
      // A delivery never outlives its claim.
      settleTimeoutMs: this.opts.claimTtlMs,
      // the attempt runs without a live actor unless an inspector watches
      promises: { deliver: deliverRow as InvokedPromise },
      ...(this.opts.inspect ? { inspect: this.opts.inspect } : {}),
    });
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

  /**
   * Something may be due: look at the end of this turn of the event loop. Every wake of one turn (the binds one group
   * commit answered, the deliveries that ended together) leads to one claim, which takes all the rows ready.
   *
   * `forDestination`: the wake is for a row just recorded for that homeserver. While this worker is delivering to it,
   * such a row can be neither claimed nor the next due one (both leave busy destinations out), so there is nothing to
   * look at: the delivery's end wakes the worker, and that round finds the row. A homeserver that refuses its
   * callbacks, with binds for it arriving faster than its attempts fail, then costs no round per bind.
   */
  wake(forDestination?: string): void {
    if (this.draining || this.wakeQueued) return;
    if (forDestination !== undefined && (this.isBusy(forDestination) || this.isPaused(forDestination))) return;
    this.wakeQueued = true;
    setImmediate(() => {
      this.wakeQueued = false;
      this.pump();
    });
  }

  private pump(): void {
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
          this.pump();
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
    for (const f of left) this.machines.interrupt(f.row.id, { type: 'RELEASE' });
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
        excludeDestinations: this.leftAlone(now),
      });
      for (const row of rows) this.run(row);
      if (rows.length < free) break;
    }
    await this.scheduleNext();
  }

  private isBusy(destination: string): boolean {
    for (const f of this.inFlight.values()) if (f.row.destination === destination) return true;
    return false;
  }

  private isPaused(destination: string): boolean {
    const until = this.paused.get(destination);
    return until !== undefined && until > this.opts.now();
  }

  /** The homeservers no round claims for now: those being delivered to, and those paused after a failure. */
  private leftAlone(now: number): string[] {
    const out = new Set<string>();
    for (const f of this.inFlight.values()) out.add(f.row.destination);
    for (const [destination, until] of this.paused) {
      if (until > now) out.add(destination);
      else this.paused.delete(destination);
    }
    return [...out];
  }

  /** Sets the timer for the earliest row that is not for a destination being delivered to right now. */
  private async scheduleNext(): Promise<void> {
    if (this.draining) return;
    const due = await this.opts.reads.nextDue(this.leftAlone(this.opts.now()));
    if (this.draining) return;
    // a paused homeserver's rows are looked at again when its pause ends
    let next = due;
    for (const until of this.paused.values()) next = next === null ? until : Math.min(next, until);
    if (next === null) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      return;
    }
    this.sleep(next - this.opts.now());
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
    const { now, log, store } = this.opts;
    const entry: InFlight = { row, done: Promise.resolve() };
    this.inFlight.set(row.id, entry);
    entry.done = this.machines
      .send(row.id, { type: 'DELIVER', now: now(), jitter: this.opts.random() })
      .then(async (out) => {
        // The homeserver is left alone until the failed row's own next attempt, a second at most.
        const failed = out?.snapshot.context;
        if (failed?.outcome === 'failed') {
          this.paused.set(row.destination, Math.min(failed.nextAttemptTs, now() + DESTINATION_PAUSE_MS));
        }
        // Refused (not due after all): give the row back untouched.
        if (out && out.snapshot.context.outcome === null) await store.release(row.id, row.claimedUntil);
      })
      .catch(async (err: unknown) => {
        // The claim runs out and the row is tried again: delivery is at least once.
        log.error({ err, callback: row.id }, 'callback worker: could not record a callback outcome');
        await store.release(row.id, row.claimedUntil).catch(() => undefined);
      })
      .finally(() => {
        this.inFlight.delete(row.id);
        this.wake();
      });
  }

  /** A claimed row as its machine: a row that failed before resumes in `retrying`, one never tried in `pending`. */
  private load(id: number): StoredMachine | undefined {
    const row = this.inFlight.get(id)?.row;
    if (!row) return undefined;
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
    // The claim's lease is what a later write of this attempt must still find.
    return {
      state: row.attempts === 0 ? 'pending' : 'retrying',
      context,
      machineVersion: CALLBACK_MACHINE_VERSION,
      rowVersion: row.claimedUntil,
    };
  }

  /** Records how an attempt ended; the attempt's start was recorded by the claim. */
  private async record(
    id: number,
    write: MachineWrite<CallbackContext>,
    expected: RowExpectation<unknown>,
  ): Promise<RowExpectation<unknown>> {
    const { store, log } = this.opts;
    const row = this.inFlight.get(id)!.row;
    const c = write.context;
    const where = { callback: row.id, destination: row.destination };
    switch (c.outcome) {
      case null:
        break;
      case 'delivered': {
        const { tokensDeleted } = await store.delivered(
          row.id,
          c.deliveredAt ?? this.opts.now(),
          this.opts.deleteInviteTokens,
        );
        log.info({ ...where, attempts: row.attempts + 1, tokensDeleted }, 'homeserver callback delivered');
        break;
      }
      case 'failed': {
        const ok = await store.retry(row.id, row.claimedUntil, c.nextAttemptTs, c.lastError ?? 'failed');
        log.warn(
          { ...where, attempts: c.attempts, nextAttemptTs: c.nextAttemptTs, error: c.lastError, claimLost: !ok },
          'homeserver callback failed; will retry',
        );
        break;
      }
      case 'abandoned':
        await store.abandon(row.id, row.claimedUntil, c.lastError ?? 'abandoned');
        log.error({ ...where, error: c.lastError }, 'homeserver callback can never be delivered; giving up');
        break;
      case 'released':
        await store.release(row.id, row.claimedUntil);
        break;
    }
    return expected;
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
