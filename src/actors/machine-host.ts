/**
 * The one way a supervisor runs machines whose row is the truth (validation sessions, homeserver callbacks,
 * replication peers).
 *
 * For each event, under a per-key queue (one event at a time per machine, any number of machines at once):
 *  1. restore the machine from its row: the stored value (JSON for a nested state, a plain name otherwise),
 *     migrated by `machine_version` through the host's table of migrations, then the owner's `restore` rule;
 *  2. compute the next snapshot with the machine's pure transition, and record it (a save that expects the row
 *     version it loaded: someone else's save in between is a conflict, not an overwrite);
 *  3. only then start what the event starts, after its row is committed: invoked promises the owner gave the host
 *     (`promises`) are run by the host itself, their ends taken by the same pure transition; other invoked actors
 *     by a live actor started from the recorded snapshot; anything else (and every event while an inspector
 *     watches) by a live actor started from the snapshot before, taking the event. A failed save leaves nothing
 *     behind: no actor, nothing started, the save's error;
 *  4. record every later change (an invoked actor's done or error) in order, until nothing invoked runs; then stop
 *     what is left and forget it. Nothing stays in memory between events. A later save that
 *     finds the row changed meanwhile (another node took an event) re-reads it and takes the actor's end on it:
 *     what the actor did (a mail sent) happened, so it is applied to the row as it is now, never answered as a failure.
 *
 * The host knows nothing of the store: its rows go through a `MachineStorePort` that a supervisor wires.
 * Names people read (metrics, histories, the debug endpoints) are the diagram's (see machines/state-value.ts).
 */
import {
  createActor,
  type ActorOptions,
  type AnyMachineSnapshot,
  type AnyStateMachine,
  type ExecutableActionObject,
  type ContextFrom,
  type EventObject,
  type EventFromLogic,
  type InputFrom,
  type InspectionEvent,
  type SnapshotFrom,
  type StateValue,
} from 'xstate';
import {
  decodeStateValue,
  encodeStateValue,
  stateNames,
  type MachineState,
  type Migration,
  type StateNames,
} from '../machines/state-value.js';

export type { MachineState, Migration };
import type { ActorInspect } from './deps.js';
import { KeyedQueue } from './keyed-queue.js';
import { ChurnMap } from '../util/churn-map.js';

/** One change of state, as a machine's history keeps it. */
export interface Transition {
  at: number;
  event: string;
  from: string;
  to: string;
}

/** A machine as its row holds it. */
export interface StoredMachine<TSeen = unknown> {
  /** the state column: JSON of a nested value or a plain state name, or the value itself */
  state: string | StateValue;
  /** the context, parsed, in the shape `machineVersion` wrote */
  context: unknown;
  machineVersion: number;
  /** the row's version, which the next save expects; null when the machine has no row of its own yet */
  rowVersion: number | null;
  /** the last transitions, oldest first */
  history?: Transition[];
  /** what else the save must still find (opaque to the host: the store port compares it) */
  seen?: TSeen;
}

/** What a save writes. */
export interface MachineWrite<TContext> {
  value: StateValue;
  /** the state column's text */
  state: string;
  /** the state as people read it */
  stateName: string;
  context: TContext;
  /** the context's JSON text (`JSON.stringify(context)`) */
  contextJson: string;
  machineVersion: number;
  history: Transition[];
  /** the first save of a machine made by `create` */
  created: boolean;
}

/** What a save expects the row to be, and, after it, what the next save expects. */
export interface RowExpectation<TSeen> {
  rowVersion: number | null;
  seen: TSeen | undefined;
}

/** The host's store access, wired by the supervisor that owns the machines. */
export interface MachineStorePort<TKey, TContext, TSeen = unknown> {
  load(key: TKey): Promise<StoredMachine<TSeen> | undefined>;
  /** Saves when the row is still as `expected` says, else rejects (a conflict); resolves with the next expectation. */
  save(key: TKey, write: MachineWrite<TContext>, expected: RowExpectation<TSeen>): Promise<RowExpectation<TSeen>>;
}

export class MachineVersionError extends Error {
  constructor(machine: string, stored: number, current: number) {
    super(`${machine}: a row of machine version ${stored} cannot be read by version ${current}`);
    this.name = 'MachineVersionError';
  }
}

/** The machine was stopped (shutdown, or its owner removed it) while an event of its was in flight. */
export class MachineStoppedError extends Error {
  constructor(machine: string) {
    super(`${machine}: stopped while an event was in flight`);
    this.name = 'MachineStoppedError';
  }
}

/**
 * The event's first save found the row changed by someone else (another node on the same database): nothing was
 * recorded and nothing started, so the event can be taken again from the row as it is now.
 */
export class RecordConflictError extends Error {
  constructor(
    machine: string,
    readonly conflict: unknown,
  ) {
    super(`${machine}: the row changed before the event could be recorded`, { cause: conflict });
    this.name = 'RecordConflictError';
  }
}

/** How often an event is taken again after its first save met a conflict, before the conflict is the answer. */
const CONFLICT_RETRIES = 8;

/** The actors an event started were still running when its time was up: they were stopped. */
export class SettleTimeoutError extends Error {
  constructor(machine: string, ms: number) {
    super(`${machine}: what the event started did not end within ${ms} ms`);
    this.name = 'SettleTimeoutError';
  }
}

interface MachineHostOptions<TMachine extends AnyStateMachine, TKey, TSeen> {
  /** the machine's name in metrics and errors */
  name: string;
  /** the machine, with its actors provided */
  machine: TMachine;
  /** the version this machine writes (its `machine_version`) */
  version: number;
  /** `migrations[n]` turns a version-n row into a version-(n + 1) one; applied in turn on restore */
  migrations?: Record<number, Migration>;
  store: MachineStorePort<TKey, ContextFrom<TMachine>, TSeen>;
  /** the owner's rule for a restored machine (after migration), e.g. for a send a restart cut short */
  restore?: (
    state: MachineState<ContextFrom<TMachine>>,
    stored: StoredMachine<TSeen>,
  ) => MachineState<ContextFrom<TMachine>>;
  /** the queue key of a machine key (default `String`) */
  keyOf?: (key: TKey) => string;
  now: () => number;
  /** transitions kept in a row's history (default 20) */
  historyLimit?: number;
  /** how long what an event starts may run before it is stopped (default 30 s; Infinity: as long as it runs) */
  settleTimeoutMs?: number;
  /** told of every change of state, in the names people read (metrics) */
  onTransition?: (from: string, to: string, event: string) => void;
  /** whether a save's error says the row changed under it (several nodes on one database): see RecordConflictError */
  isConflict?: (error: unknown) => boolean;
  /** `--inspect` */
  inspect?: ActorInspect;
  /**
   * The machine's invoked promise actors, by `src`, as plain functions the host runs itself: an event whose only
   * effect is to invoke these (and whatever their ends lead to) runs without a live actor, its steps computed by the
   * machine's pure transition. The machine must provide the same under `src` (e.g. `fromPromise` over the same
   * function): an inspector (`inspect`) watches a live actor, which runs them as the machine does.
   */
  promises?: Record<string, InvokedPromise>;
}

/**
 * An invoked promise actor's work, called as `fromPromise` calls its creator (so one function serves both): its input,
 * and a signal aborted when it is stopped.
 */
export type InvokedPromise = (args: { input: unknown; signal: AbortSignal }) => Promise<unknown>;

/** What an invoked promise is called with: its signal is made only if the work asks for it (most never listen). */
class PromiseArgs {
  private controller: AbortController | undefined;
  constructor(readonly input: unknown) {}
  get signal(): AbortSignal {
    return (this.controller ??= new AbortController()).signal;
  }
  abort(): void {
    this.controller?.abort();
  }
}

interface SendOptions<TMachine extends AnyStateMachine> {
  /**
   * Looked at before anything is recorded, with the snapshot the event leads to: false leaves the machine as it
   * is (nothing recorded, nothing started). How the sessions supervisor asks the rate limiter only for a send.
   */
  admit?: (next: SnapshotFrom<TMachine>, current: SnapshotFrom<TMachine>) => boolean | Promise<boolean>;
  /** overrides `settleTimeoutMs` for this event */
  settleTimeoutMs?: number;
}

interface Outcome<TMachine extends AnyStateMachine> {
  snapshot: SnapshotFrom<TMachine>;
  /** the state as people read it */
  state: string;
  history: Transition[];
  /** `admit` said no: nothing was recorded */
  refused: boolean;
}

/** An outcome with what the store port last said of the row (its `seen`). */
export type HostOutcome<TMachine extends AnyStateMachine, TSeen> = Outcome<TMachine> & { seen: TSeen | undefined };

/** Inside the host a snapshot is any machine's; callers get their machine's type. */
type Snapshot<_TMachine extends AnyStateMachine> = AnyMachineSnapshot;

const DEFAULT_HISTORY = 20;

/** What an invoked actor's end sends its parent. */
type ActorEndEvent = EventObject & { actorId: string; output?: unknown; error?: unknown };

/** How an event's later changes run: a live actor, or the host's own promises. */
interface EventRun {
  snapshot: () => AnyMachineSnapshot;
  /** an event from outside while it runs (`interrupt`) */
  take: (event: EventObject) => void;
  /** starts what the event started (after its row is committed) */
  start: () => void;
  /** stops whatever still runs */
  dispose: () => void;
}

interface InFlight {
  /** the machine as it is now */
  snapshot: () => AnyMachineSnapshot;
  /** hands it an event at once */
  take: (event: EventObject) => void;
  /** stops the event: what it started is aborted */
  stop: () => void;
}
const DEFAULT_SETTLE_MS = 30_000;

/** A snapshot's value: xstate types any machine's as `any`, every machine's is a StateValue. */
function valueOf(s: AnyMachineSnapshot): StateValue {
  return s.value as StateValue;
}

/** Nothing the machine started runs any more: the event it took is over. */
function settled(s: AnyMachineSnapshot): boolean {
  return s.status !== 'active' || Object.keys(s.children as object).length === 0;
}

/** An action `transition()` has already applied: an immediate raise (taken within the same macrostep). */
function isInternal(action: { type: string; params?: unknown }): boolean {
  const delay = (action.params as { delay?: unknown } | undefined)?.delay;
  return action.type === 'xstate.raise' && delay === undefined;
}

/** An invoked child that a step spawned: a live actor restored from the step's snapshot revives and starts it. */
function isSpawn(action: { type: string }): boolean {
  return action.type === 'xstate.spawnChild';
}

/** The scope a machine's own `transition` and `getInitialSnapshot` take. */
type MachineScope = Parameters<AnyStateMachine['transition']>[2];

/**
 * The machine's pure steps. xstate's `initialTransition()` and `transition()` build a new inert actor, and a new
 * system, for every call, which costs more than the step itself; one inert scope per host serves every step here.
 * As in xstate's own, the children a step spawns are created but never started nor registered, and the actions are
 * collected, not run. A child registered under a systemId would stay in the shared system, so such machines are
 * refused.
 */
class PureSteps {
  private readonly scope: MachineScope;
  private collected: ExecutableActionObject[] = [];

  constructor(private readonly machine: AnyStateMachine) {
    if (invokesWithSystemId(machine.config)) {
      throw new Error(`${machine.id}: the machine host runs no machine that invokes an actor with a systemId`);
    }
    const self = createActor(machine);
    this.scope = {
      self,
      id: '',
      sessionId: '',
      logger: () => undefined,
      defer: () => undefined,
      emit: () => undefined,
      system: self.system,
      stopChild: () => undefined,
      actionExecutor: (action) => {
        this.collected.push(action);
      },
    };
  }

  initial(input: unknown): [AnyMachineSnapshot, ExecutableActionObject[]] {
    this.collected = [];
    const snapshot = this.machine.getInitialSnapshot(this.scope, input) as AnyMachineSnapshot;
    return [snapshot, this.collected];
  }

  next(snapshot: AnyMachineSnapshot, event: EventObject): [AnyMachineSnapshot, ExecutableActionObject[]] {
    this.collected = [];
    const next = this.machine.transition(snapshot, event, this.scope) as AnyMachineSnapshot;
    return [next, this.collected];
  }
}

function invokesWithSystemId(config: unknown): boolean {
  const node = config as { invoke?: unknown; states?: Record<string, unknown> } | undefined;
  if (!node || typeof node !== 'object') return false;
  const invokes = node.invoke === undefined ? [] : Array.isArray(node.invoke) ? node.invoke : [node.invoke];
  if (invokes.some((i) => typeof i === 'object' && i !== null && 'systemId' in i)) return true;
  return Object.values(node.states ?? {}).some(invokesWithSystemId);
}

/** `xstate.done.actor.sendToken` → `done: sendToken`, as the diagrams name an invoked actor's end. */
function eventName(type: string): string {
  const m = /^xstate\.(done|error)\.actor\.(.+)$/.exec(type);
  return m ? `${m[1]}: ${m[2]}` : type;
}

export class MachineHost<TMachine extends AnyStateMachine, TKey = string, TSeen = unknown> {
  readonly names: StateNames;
  private readonly queue = new KeyedQueue();
  /** the actors of events in flight, by queue key: nothing else is kept */
  private readonly live = new ChurnMap<InFlight>();
  /** the live actors counted by state, kept as they start, move and stop: read by `liveCounts`, never walked */
  private readonly liveByState = new Map<string, number>();
  private readonly keyOf: (key: TKey) => string;
  private readonly steps: PureSteps;
  private stopped = false;

  constructor(private readonly opts: MachineHostOptions<TMachine, TKey, TSeen>) {
    this.names = stateNames(opts.machine);
    this.keyOf = opts.keyOf ?? String;
    this.steps = new PureSteps(opts.machine);
  }

  /** Runs `fn` in the queue of `key`, so nothing else happens to that machine meanwhile. */
  exclusive<T>(key: TKey, fn: () => Promise<T>): Promise<T> {
    return this.queue.run(this.keyOf(key), fn);
  }

  /**
   * A new machine under `key` (no row exists) from `input`, taking `event` as its first: recorded as it is after
   * the event, then started. `key` must not be in use.
   */
  create(
    key: TKey,
    input: InputFrom<TMachine>,
    event: EventFromLogic<TMachine>,
    options: SendOptions<TMachine> = {},
  ): Promise<HostOutcome<TMachine, TSeen>> {
    return this.exclusive(key, async () => {
      const [initial, initialActions] = this.steps.initial(input);
      return this.process(
        key,
        { snapshot: initial, history: [], expected: { rowVersion: null, seen: undefined }, input, initialActions },
        event,
        options,
      );
    });
  }

  /** `event` for the machine of `key`; undefined when it has no row. */
  send(
    key: TKey,
    event: EventFromLogic<TMachine>,
    options: SendOptions<TMachine> = {},
  ): Promise<HostOutcome<TMachine, TSeen> | undefined> {
    return this.exclusive(key, () => this.sendNow(key, event, options));
  }

  /** `send` for a caller that already holds the key's queue (inside `exclusive`). */
  async sendNow(
    key: TKey,
    event: EventFromLogic<TMachine>,
    options: SendOptions<TMachine> = {},
  ): Promise<HostOutcome<TMachine, TSeen> | undefined> {
    for (let attempt = 0; ; attempt++) {
      const restored = await this.restore(key);
      if (!restored) return undefined;
      try {
        return await this.process(key, restored, event, options);
      } catch (error) {
        // Another node saved first: the event is taken again from what it saved, after a pause of random length
        // (two nodes hammering one row would otherwise keep meeting).
        if (!(error instanceof RecordConflictError) || attempt >= CONFLICT_RETRIES) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * 2 ** attempt));
      }
    }
  }

  /** The machine of `key` as its row says, without an event (the debug endpoint); undefined when it has none. */
  peek(key: TKey): Promise<{ snapshot: SnapshotFrom<TMachine>; state: string; history: Transition[] } | undefined> {
    return this.exclusive(key, async () => {
      const restored = await this.restore(key);
      return (
        restored && {
          snapshot: restored.snapshot as SnapshotFrom<TMachine>,
          state: this.names.nameOf(valueOf(restored.snapshot)),
          history: restored.history,
        }
      );
    });
  }

  /**
   * Hands `event` at once to the machine of `key` while an event of its is in flight (what that event started is
   * still running), instead of queueing it behind: how shutdown cuts a delivery short. What the event changes is
   * recorded like any other change. False when nothing of that machine is in flight.
   */
  interrupt(key: TKey, event: EventFromLogic<TMachine>): boolean {
    const inFlight = this.live.get(this.keyOf(key));
    // An actor whose invoked actors have ended is only being recorded and stopped: it would take the event and
    // start what it leads to, only to be stopped with it. The event waits for its turn instead.
    if (!inFlight || settled(inFlight.snapshot())) return false;
    inFlight.take(event);
    return true;
  }

  /**
   * Stops the machine of `key` if an event of its is in flight: what that event started is aborted, the event
   * answers `MachineStoppedError`, and the row says where the machine was.
   */
  stop(key: TKey): void {
    this.live.get(this.keyOf(key))?.stop();
  }

  /** The machines with an event in flight and their states: all that is in memory. */
  *inFlight(): Generator<{ key: string; state: string }> {
    for (const [key, inFlight] of this.live) yield { key, state: this.names.nameOf(valueOf(inFlight.snapshot())) };
  }

  /** The machines with an event in flight, counted by state (what `inFlight` lists, without walking it). */
  liveCounts(): { total: number; byState: Record<string, number> } {
    return { total: this.live.size, byState: Object.fromEntries(this.liveByState) };
  }

  /** Machines with an event running or waiting. */
  get busy(): number {
    return this.queue.size;
  }

  /** Stops every actor at once (what they started is aborted); their rows say where they were. */
  stopAll(): void {
    this.stopped = true;
    for (const inFlight of [...this.live.values()]) inFlight.stop();
  }

  private async restore(
    key: TKey,
  ): Promise<{ snapshot: Snapshot<TMachine>; history: Transition[]; expected: RowExpectation<TSeen> } | undefined> {
    const stored = await this.opts.store.load(key);
    if (!stored) return undefined;
    const { machine, version, migrations = {}, name } = this.opts;
    if (stored.machineVersion > version) throw new MachineVersionError(name, stored.machineVersion, version);
    let state: MachineState<Record<string, unknown>> = {
      value: typeof stored.state === 'string' ? decodeStateValue(stored.state) : stored.state,
      context: stored.context as Record<string, unknown>,
    };
    for (let v = stored.machineVersion; v < version; v++) {
      const migrate = migrations[v];
      if (!migrate) throw new MachineVersionError(name, stored.machineVersion, version);
      state = migrate(state);
    }
    let current = state as unknown as MachineState<ContextFrom<TMachine>>;
    if (this.opts.restore) current = this.opts.restore(current, stored);
    const snapshot = machine.resolveState({ value: current.value, context: current.context }) as Snapshot<TMachine>;
    return {
      snapshot,
      history: stored.history ?? [],
      expected: { rowVersion: stored.rowVersion, seen: stored.seen },
    };
  }

  private async process(
    key: TKey,
    from: {
      snapshot: Snapshot<TMachine>;
      history: Transition[];
      expected: RowExpectation<TSeen>;
      /** a machine without a row: started from its input */
      input?: InputFrom<TMachine>;
      /** what entering its initial state would run */
      initialActions?: ExecutableActionObject[];
    },
    event: EventFromLogic<TMachine>,
    options: SendOptions<TMachine>,
  ): Promise<HostOutcome<TMachine, TSeen>> {
    if (this.stopped) throw new Error(`${this.opts.name}: the host is stopping`);
    const { machine, store, now, onTransition } = this.opts;
    const current = from.snapshot;
    const [next, stepActions] = this.steps.next(current, event);
    const actions = from.initialActions ? [...from.initialActions, ...stepActions] : stepActions;
    if (options.admit && !(await options.admit(next as SnapshotFrom<TMachine>, current as SnapshotFrom<TMachine>))) {
      return {
        snapshot: current as SnapshotFrom<TMachine>,
        state: this.names.nameOf(valueOf(current)),
        history: from.history,
        refused: true,
        seen: from.expected.seen,
      };
    }

    // A new machine has no row: its first save happens whatever the event did, and its history starts at the
    // initial state.
    let created = from.input !== undefined;
    let expected = from.expected;
    let history = from.history;
    // A new machine's first save happens whatever the event did: what it was before is not compared.
    let recorded = {
      value: valueOf(current),
      text: created ? '' : encodeStateValue(valueOf(current)),
      context: created ? '' : JSON.stringify(current.context),
    };
    const record = async (snapshot: Snapshot<TMachine>, eventType: string) => {
      const value = valueOf(snapshot);
      const text = encodeStateValue(value);
      const context = JSON.stringify(snapshot.context);
      if (!created && recorded.text === text && recorded.context === context) return;
      const fromName = this.names.nameOf(recorded.value);
      const toName = this.names.nameOf(value);
      const moved = fromName !== toName;
      const label = eventName(eventType);
      const nextHistory = moved
        ? [...history, { at: now(), event: label, from: fromName, to: toName }].slice(
            -(this.opts.historyLimit ?? DEFAULT_HISTORY),
          )
        : history;
      expected = await store.save(
        key,
        {
          value,
          state: text,
          stateName: toName,
          context: snapshot.context as ContextFrom<TMachine>,
          contextJson: context,
          machineVersion: this.opts.version,
          history: nextHistory,
          created,
        },
        expected,
      );
      created = false;
      history = nextHistory;
      recorded = { value, text, context };
      if (moved) onTransition?.(fromName, toName, label);
    };

    // Record, then act: a failed save throws here, before any actor exists.
    try {
      await record(next, (event as EventObject).type);
    } catch (error) {
      throw this.opts.isConflict?.(error) ? new RecordConflictError(this.opts.name, error) : error;
    }
    // The event starts nothing (no invoked actor, no action with an effect outside the machine): the snapshot just
    // recorded is where the machine ends, and no actor needs to compute the same transition again.
    if (settled(next) && actions.every(isInternal)) {
      return {
        snapshot: next as SnapshotFrom<TMachine>,
        state: this.names.nameOf(valueOf(next)),
        history,
        refused: false,
        seen: expected.seen,
      };
    }

    /**
     * What an actor's end leads to, taken on the row as it is now, once a save of it met someone else's (another node
     * took an event of this machine while what this event started was running): the end happened (a mail went) and
     * cannot be taken back, so it is applied to the state that node left, not refused. Only an end that starts
     * nothing more is applied so; the row's newer state is then the event's outcome.
     */
    const lateEnd: { onRow: Snapshot<TMachine> | null } = { onRow: null };
    const reconcile = async (ended: EventObject, conflict: unknown): Promise<void> => {
      for (let attempt = 0; ; attempt++) {
        const restored = await this.restore(key);
        if (!restored) throw conflict;
        const [after, effects] = this.steps.next(restored.snapshot, ended);
        // Leaving the state that ran the work stops its child, which a restored machine does not have.
        if (!settled(after) || !effects.every((a) => isInternal(a) || a.type === 'xstate.stopChild')) throw conflict;
        expected = restored.expected;
        history = restored.history;
        recorded = {
          value: valueOf(restored.snapshot),
          text: encodeStateValue(valueOf(restored.snapshot)),
          context: JSON.stringify(restored.snapshot.context),
        };
        try {
          await record(after, ended.type);
          lateEnd.onRow = after;
          return;
        } catch (error) {
          if (!this.opts.isConflict?.(error) || attempt >= CONFLICT_RETRIES) throw error;
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 5 * 2 ** attempt));
        }
      }
    };
    const recordLater = async (snapshot: Snapshot<TMachine>, ended: EventObject): Promise<void> => {
      // Once the row has gone its own way, the actor's later snapshots describe a machine that is not stored.
      if (lateEnd.onRow) return;
      try {
        await record(snapshot, ended.type);
      } catch (error) {
        if (!this.opts.isConflict?.(error)) throw error;
        await reconcile(ended, error);
      }
    };
    const k = this.keyOf(key);
    /** the state the machine is counted under while it is live (null: not counted) */
    let counted: string | null = null;
    const countAs = (state: string | null) => {
      if (state === counted) return;
      if (counted !== null) {
        const n = (this.liveByState.get(counted) ?? 0) - 1;
        if (n > 0) this.liveByState.set(counted, n);
        else this.liveByState.delete(counted);
      }
      if (state !== null) this.liveByState.set(state, (this.liveByState.get(state) ?? 0) + 1);
      counted = state;
    };
    let saving: Promise<void> = Promise.resolve();
    const saveErrors: unknown[] = [];
    let end: ((how: 'settled' | 'stopped') => void) | null = null;
    const changed = (snapshot: Snapshot<TMachine>, ended: EventObject) => {
      countAs(this.names.nameOf(valueOf(snapshot)));
      // Every change after the event is recorded in order; the first failure is the event's.
      saving = saving
        .then(() => recordLater(snapshot, ended))
        .catch((err: unknown) => {
          saveErrors.push(err);
        });
      if (settled(snapshot)) end?.('settled');
    };
    const failed = (error: unknown) => {
      saveErrors.push(error);
      end?.('settled');
    };
    // What the event starts is only invoked children (the raises are taken already): they start from the snapshot
    // just recorded, and the event is not taken a second time; promises the host runs itself need no actor at all.
    // Anything else (an action with an effect of its own) runs as a live actor takes the event; so does every event
    // while an inspector watches, which shows it taken.
    const fromRecorded = !this.opts.inspect && actions.every((a) => isInternal(a) || isSpawn(a));
    const run =
      fromRecorded && actions.every((a) => isInternal(a) || this.isOwnPromise(a))
        ? this.runPromises(next, actions, changed, failed)
        : this.runActor(
            fromRecorded
              ? { snapshot: machine.getPersistedSnapshot(next) }
              : from.input !== undefined
                ? { input: from.input }
                : { snapshot: current },
            fromRecorded ? null : event,
            changed,
          );
    let stopped = false;
    this.live.set(k, {
      snapshot: run.snapshot,
      take: run.take,
      stop: () => {
        stopped = true;
        end?.('stopped');
      },
    });
    countAs(this.names.nameOf(valueOf(run.snapshot())));
    const timeoutMs = options.settleTimeoutMs ?? this.opts.settleTimeoutMs ?? DEFAULT_SETTLE_MS;
    let timer: NodeJS.Timeout | undefined;
    try {
      run.start();
      if (!settled(run.snapshot()) && !stopped && saveErrors.length === 0) {
        const how = await new Promise<'settled' | 'stopped' | 'timeout'>((resolve) => {
          end = resolve;
          if (Number.isFinite(timeoutMs)) timer = setTimeout(() => resolve('timeout'), timeoutMs);
        });
        if (how === 'timeout') throw new SettleTimeoutError(this.opts.name, timeoutMs);
      }
      if (stopped) throw new MachineStoppedError(this.opts.name);
      await saving;
      if (saveErrors.length > 0) throw saveErrors[0];
      const snapshot = lateEnd.onRow ?? run.snapshot();
      if (snapshot.status === 'error') throw snapshot.error;
      return {
        snapshot: snapshot as SnapshotFrom<TMachine>,
        state: this.names.nameOf(valueOf(snapshot)),
        history,
        refused: false,
        seen: expected.seen,
      };
    } finally {
      clearTimeout(timer);
      run.dispose();
      this.live.delete(k);
      countAs(null);
      await saving;
    }
  }

  /** A spawn of an invoked promise the host runs itself (`promises`). */
  private isOwnPromise(action: ExecutableActionObject): boolean {
    if (!isSpawn(action)) return false;
    const src = (action.params as { src?: unknown } | undefined)?.src;
    return typeof src === 'string' && this.opts.promises !== undefined && Object.hasOwn(this.opts.promises, src);
  }

  /**
   * A live actor runs the event: from `start` (a snapshot, or a new machine's input), taking `event` if it is not in
   * the snapshot already. Its changes reach `changed` once it has started.
   */
  private runActor(
    start: Pick<ActorOptions<AnyStateMachine>, 'snapshot' | 'input'>,
    event: EventObject | null,
    changed: (snapshot: AnyMachineSnapshot, ended: EventObject) => void,
  ): EventRun {
    const outer = this.opts.inspect;
    let taken = false;
    const inspect = (ev: InspectionEvent) => {
      if (typeof outer === 'function') outer(ev);
      else outer?.next?.(ev);
      if (taken && ev.type === '@xstate.snapshot' && ev.actorRef === actor)
        changed(ev.snapshot as AnyMachineSnapshot, ev.event);
    };
    const actor = createActor(this.opts.machine as AnyStateMachine, { ...start, inspect });
    // An actor that fails is answered by the event, not reported as unhandled.
    actor.subscribe({ error: () => undefined });
    return {
      snapshot: () => actor.getSnapshot() as AnyMachineSnapshot,
      take: (e) => actor.send(e),
      start: () => {
        actor.start();
        taken = true;
        if (event) actor.send(event);
      },
      dispose: () => {
        taken = false;
        actor.stop();
      },
    };
  }

  /**
   * The host runs the event's invoked promises itself (`promises`), each end taken by the machine's pure transition
   * as a live actor would take it (`xstate.done.actor.<id>` or `xstate.error.actor.<id>`): no actor, no system, the
   * same rows. A child the machine no longer has (its state was left) is aborted, as a live actor stops it.
   */
  private runPromises(
    from: AnyMachineSnapshot,
    actions: ExecutableActionObject[],
    changed: (snapshot: AnyMachineSnapshot, ended: EventObject) => void,
    failed: (error: unknown) => void,
  ): EventRun {
    const promises = this.opts.promises ?? {};
    const running = new Map<string, PromiseArgs>();
    let current = from;
    let disposed = false;
    const startAll = (snapshot: AnyMachineSnapshot, effects: ExecutableActionObject[]) => {
      for (const action of effects) {
        if (!isSpawn(action)) continue;
        const { id, src, input } = action.params as { id: string; src: string; input: unknown };
        const args = new PromiseArgs(input);
        running.set(id, args);
        let work: Promise<unknown>;
        try {
          work = (promises[src] as InvokedPromise)(args);
        } catch (error) {
          // as fromPromise: a creator that throws is a promise that rejects
          work = Promise.reject(error instanceof Error ? error : new Error(String(error)));
        }
        work.then(
          (output: unknown) => ended(id, args, { type: `xstate.done.actor.${id}`, output, actorId: id }),
          (error: unknown) => ended(id, args, { type: `xstate.error.actor.${id}`, error, actorId: id }),
        );
      }
      for (const [id, args] of running) {
        if (id in (snapshot.children as object)) continue;
        running.delete(id);
        args.abort();
      }
    };
    const ended = (id: string, args: PromiseArgs, event: ActorEndEvent) => {
      if (disposed || running.get(id) !== args) return;
      running.delete(id);
      take(event);
    };
    const take = (event: EventObject) => {
      const [after, effects] = this.steps.next(current, event);
      const other = effects.find((a) => !isInternal(a) && !this.isOwnPromise(a) && a.type !== 'xstate.stopChild');
      if (other) {
        failed(new Error(`${this.opts.name}: ${event.type} leads to ${other.type}, which needs a live actor`));
        return;
      }
      current = after;
      startAll(after, effects);
      changed(after, event);
    };
    return {
      snapshot: () => current,
      take,
      start: () => startAll(current, actions),
      dispose: () => {
        disposed = true;
        for (const args of running.values()) args.abort();
        running.clear();
      },
    };
  }
}
