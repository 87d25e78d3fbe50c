/**
 * The validation sessions of the sessions supervisor, as a user of the machine host (actors/machine-host.ts):
 * each event restores its session from the rows, records the next state, and only then runs what the event
 * starts (the token's mail or SMS); nothing stays in memory once the event is answered. What is particular to
 * sessions lives here: Sydent's rows beside ours (read, reconciled, and never overwritten with older knowledge),
 * a send cut short by a restart, the request's deadline for the send, and the rate limit asked only for a send.
 */
import { fromPromise, type StateValue } from 'xstate';
import type { Admission } from '../util/rate-limiter.js';
import type { ActorInspect } from '../actors/deps.js';
import { KeyedQueue } from '../actors/keyed-queue.js';
import { ChurnMap } from '../util/churn-map.js';
import {
  MachineHost,
  type HostOutcome,
  type InvokedPromise,
  type MachineState,
  type MachineWrite,
  type RowExpectation,
  type StoredMachine,
  type Transition,
} from '../actors/machine-host.js';
import { eventsBetween } from '../machines/export.js';
import { stateNames, valueOfPath } from '../machines/state-value.js';
import {
  SESSION_MACHINE_VERSION,
  sessionMigrations,
  validationSessionMachine,
  type Medium,
  type Rejection,
  type SendTokenInput,
  type SessionContext,
  type SessionEvent,
} from '../machines/validation-session.js';
import type { CallOptions } from '../actors/ask.js';
import type { Cancellation } from '../actors/request-context.js';
import {
  newSid,
  SessionConflictError,
  SidTakenError,
  type SessionSave,
  type SessionWrite,
  type StoredSession,
  type SydentColumns,
  type SydentSessionRow,
} from '../store/sessions.js';
import { reconcileWithSydent, sessionFromSydentRow, type LoadedSession } from './sydent-rows.js';

/**
 * Sends a session's token by mail or SMS, resolving once the server or provider accepted it. By `deadline`
 * (Date.now() time, not the session clock), or when `cancel` is aborted, the send is aborted (no message arrives
 * later) and the session records a failed send.
 */
export type TokenSender = (
  input: SendTokenInput,
  request: { deadline: number; cancel?: Cancellation },
) => Promise<void>;

/** The default time limit of a requestToken (`[http] send_deadline_seconds`): the send gets what is left of it. */
export const REQUEST_TOKEN_TIME_LIMIT_MS = 20_000;
/** Below this, a send is not started: it could not finish in time, and a message for a failed request is worse. */
const MIN_SEND_TIME_MS = 1_000;
/** Of a request's time, what is kept after the send for the session to record its outcome and answer. */
const RECORD_MARGIN_MS = 1_000;
/** How much longer than the send's deadline the host waits for the machine to leave sendingToken. */
const SEND_SETTLE_MS = 2_000;

/** The reads the host needs, from the store's read facade. */
export interface SessionReadPort {
  findSid(medium: string, address: string, clientSecret: string): Promise<number | undefined>;
  load(sid: number): Promise<StoredSession | undefined>;
}

/**
 * The store writes the host needs, answered by the store supervisor; each carries the deadline and cancellation of the
 * request whose event it records (none for a write no request waits for).
 */
export interface SessionStorePort {
  /** under `write.sid`, picked by the host: a sid in use rejects with SidTakenError */
  create(medium: Medium, clientSecret: string, write: SessionWrite, request?: CallOptions): Promise<number>;
  save(write: SessionWrite, expectedVersion: number | null, request?: CallOptions): Promise<number>;
}

export interface SessionHostDeps {
  now: () => number;
  reads: SessionReadPort;
  store: SessionStorePort;
  senders: Partial<Record<Medium, TokenSender>>;
  /** rate limit for the sender of a token, consulted only when a token will really be sent */
  admit: (medium: Medium, key: string, request: CallOptions) => Promise<Admission>;
  newToken: (medium: Medium) => string;
  /** the sid a new session tries first (default newSid); one in use is refused by the create, and another tried */
  newSid?: () => number;
  /** told of every state change, in the diagram's names (metrics) */
  onTransition?: (from: string, to: string) => void;
  /** `--inspect` */
  inspect?: ActorInspect;
  /**
   * Several nodes on one database: requestTokens for one session sent to several nodes take their turns across
   * them, as they do within one node (absent: one node, whose own queue is enough).
   */
  turns?: RequestTurns;
}

/** A lock per key that one node at a time holds (the store's holdKey and releaseKey). */
export interface RequestTurns {
  /** false when the deadline came first */
  hold(key: string, deadline: number): Promise<boolean>;
  release(key: string): Promise<void>;
}

/** What a request learns about its session after the event. */
export interface SessionOutcome {
  sid: string;
  state: string;
  rejection: Rejection | null;
  lastError: string | null;
  medium: Medium;
  /** canonical: casefolded email, or E.164 digits */
  address: string;
  /** the address as the session's row holds it: as the client typed it for a session Sydent created */
  storedAddress: string;
  validatedAt: number | null;
  mtime: number;
  nextLink: string | null;
  brand: string | null;
  mxid: string | null;
  createdBySydent: boolean;
}

/**
 * Stores the binding of a session's 3PID. With `session` (the session's row as its move to bound writes it), in the
 * same write as the binding, answering the row's new version; with null (bound again to the same user: the row has
 * nothing new), the binding alone, answering null.
 */
export type PublishBinding = (
  threepid: { medium: Medium; address: string },
  session: SessionSave | null,
) => Promise<number | null>;

export type RequestTokenResult = ({ limited: false } & SessionOutcome) | { limited: true; retryAfterMs: number };

export interface RequestTokenArgs {
  medium: Medium;
  address: string;
  sendTo: string;
  clientSecret: string;
  sendAttempt: number;
  nextLink: string | null;
  brand: string | null;
  /** who is asking, for the rate limit: the v2 user, or the client IP on v1 */
  requester: string;
  ipAddress: string | null;
  /** Date.now() time by which the request must be answered: a token send ends before, so its outcome is recorded */
  deadline: number;
}

/** What the store port's save must still find of a session's rows, and what its outcome needs of them. */
interface SessionSeen {
  /** Sydent's columns as last read or written: a row that no longer says this was changed by someone else */
  sydent: SydentColumns | null;
  /** Sydent's row as loaded, to reconcile our machine row with what Sydent did since */
  row: SydentSessionRow | null;
  /** the address as the session's row holds it */
  storedAddress: string;
}

/** The request an event of a session is processed for: what its writes and the send it may start must keep to. */
interface SessionRequest {
  /** Date.now() time by which the request is answered: every ask it makes carries it */
  deadline: number;
  /** Date.now() time by which the send must have ended */
  sendBy: number;
  cancel: Cancellation | undefined;
}

type SessionMachine = typeof validationSessionMachine;

const names = stateNames(validationSessionMachine);
const valueOf = (state: string): StateValue => valueOfPath(names.pathOfName(state) ?? state);

export class SessionHost {
  private readonly machines: MachineHost<SessionMachine, number, SessionSeen>;
  /** one requestToken per (medium, address, client_secret) at a time */
  private readonly requests = new KeyedQueue();
  /** the bind whose BIND is being processed, by sid: how its move to bound is stored */
  private readonly binds = new ChurnMap<{ publish: PublishBinding; published: boolean }>();
  /** the request whose event is being processed, by sid: its deadline, the time the invoked send must keep to, its cancellation */
  private readonly sessionRequests = new ChurnMap<SessionRequest>();

  constructor(private readonly deps: SessionHostDeps) {
    const sendToken = async ({ input }: { input: SendTokenInput }): Promise<void> => {
      const send = deps.senders[input.medium];
      if (!send) throw new Error(`no sender for ${input.medium}`);
      // The machine host starts this only once the session's row says it is sending (record, then act).
      const request = this.sessionRequests.get(input.sid);
      const deadline = request?.sendBy ?? Date.now() + REQUEST_TOKEN_TIME_LIMIT_MS;
      if (deadline - Date.now() < MIN_SEND_TIME_MS) throw new Error('no time was left to send the token');
      await send(input, request?.cancel ? { deadline, cancel: request.cancel } : { deadline });
    };
    const machine = validationSessionMachine.provide({
      actors: { sendToken: fromPromise<void, SendTokenInput>(sendToken) },
    });
    this.machines = new MachineHost<SessionMachine, number, SessionSeen>({
      name: 'validationSession',
      machine,
      version: SESSION_MACHINE_VERSION,
      migrations: sessionMigrations,
      store: { load: (sid) => this.load(sid), save: (sid, write, expected) => this.save(sid, write, expected) },
      restore: restoreSession,
      now: deps.now,
      onTransition: deps.onTransition,
      // several nodes on one database: a save another node made first is re-read and the event taken again
      isConflict: (error) => error instanceof SessionConflictError,
      inspect: deps.inspect,
      // the send runs without a live actor unless an inspector watches
      promises: { sendToken: sendToken as InvokedPromise },
    });
  }

  /** One requestToken per (medium, address, client_secret) at a time, so two racing requests share a session. */
  async requestToken(args: RequestTokenArgs, cancel?: Cancellation): Promise<RequestTokenResult> {
    const key = `${args.medium}\0${args.address}\0${args.clientSecret}`;
    return this.requests.run(key, async () => {
      const turns = this.deps.turns;
      // Not held by the deadline: the row versions still keep the session right, only the mails may be two.
      const held = turns ? await turns.hold(key, args.deadline) : false;
      try {
        return await this.requestTokenQueued(args, cancel);
      } finally {
        if (held) await turns?.release(key);
      }
    });
  }

  private async requestTokenQueued(
    args: RequestTokenArgs,
    cancel: Cancellation | undefined,
  ): Promise<RequestTokenResult> {
    const event = (freshToken: string): SessionEvent => ({
      type: 'REQUEST_TOKEN',
      clientSecret: args.clientSecret,
      sendAttempt: args.sendAttempt,
      nextLink: args.nextLink,
      brand: args.brand,
      sendTo: args.sendTo,
      ipAddress: args.ipAddress,
      freshToken,
      now: this.deps.now(),
    });
    const existing = await this.deps.reads.findSid(args.medium, args.address, args.clientSecret);
    if (existing !== undefined) {
      let retryAfterMs: number | null = null;
      // The request is known to the session's writes and send only while it holds the session's queue.
      const outcome = await this.machines.exclusive(existing, () =>
        this.withRequest(existing, { deadline: args.deadline, cancel }, (settleTimeoutMs) =>
          this.machines.sendNow(existing, event(this.deps.newToken(args.medium)), {
            settleTimeoutMs,
            // The rate limit counts sends: a requestToken that sends nothing is never limited.
            admit: async (next) => {
              if (!next.matches({ live: 'sendingToken' })) return true;
              const admission = await this.deps.admit(
                args.medium,
                args.requester,
                callOptions({ deadline: args.deadline, cancel }),
              );
              if (!admission.ok) retryAfterMs = admission.retryAfterMs;
              return admission.ok;
            },
          }),
        ),
      );
      if (retryAfterMs !== null) return { limited: true, retryAfterMs };
      // Undefined: purged between the look-up and the load, so a new session, as if there had never been one.
      if (outcome) return limitedNot(outcomeOf(outcome));
    }

    const admission = await this.deps.admit(
      args.medium,
      args.requester,
      callOptions({ deadline: args.deadline, cancel }),
    );
    if (!admission.ok) return { limited: true, retryAfterMs: admission.retryAfterMs };
    const token = this.deps.newToken(args.medium);
    // The sid is picked here and checked by the create itself (no ask for a free one first): a sid in use, rare
    // among the hour's 2^31, is refused before anything is written, and another is tried.
    for (;;) {
      const sid = this.deps.newSid?.() ?? newSid(this.deps.now());
      try {
        return await this.createSession(sid, token, args, event, cancel);
      } catch (error) {
        if (!(error instanceof SidTakenError)) throw error;
      }
    }
  }

  private async createSession(
    sid: number,
    token: string,
    args: RequestTokenArgs,
    event: (freshToken: string) => SessionEvent,
    cancel: Cancellation | undefined,
  ): Promise<RequestTokenResult> {
    const input = {
      sid: String(sid),
      medium: args.medium,
      address: args.address,
      sendTo: args.sendTo,
      clientSecret: args.clientSecret,
      token,
      sendAttempt: -1,
      mtime: this.deps.now(),
      nextLink: args.nextLink,
      brand: args.brand,
      ipAddress: args.ipAddress,
    };
    const outcome = await this.withRequest(sid, { deadline: args.deadline, cancel }, (settleTimeoutMs) =>
      this.machines.create(sid, input, event(token), { settleTimeoutMs }),
    );
    return limitedNot(outcomeOf(outcome));
  }

  /** `undefined` when there is no such session. `request`: the deadline and cancellation of the request it answers. */
  async send(
    sid: number,
    event: SessionEvent,
    request?: { deadline: number; cancel?: Cancellation },
  ): Promise<SessionOutcome | undefined> {
    const outcome = request
      ? await this.machines.exclusive(sid, () =>
          this.withRequest(sid, { deadline: request.deadline, cancel: request.cancel }, () =>
            this.machines.sendNow(sid, event),
          ),
        )
      : await this.machines.send(sid, event);
    return outcome && outcomeOf(outcome);
  }

  /**
   * BIND for a session. A move to bound is stored by `publish`, with the binding, in one write: a binding that
   * cannot be stored leaves the session as it was (validated), and the error is the answer. `undefined` when there
   * is no such session; a refused BIND (wrong secret, not validated, expired) publishes nothing.
   */
  async bind(
    sid: number,
    event: Extract<SessionEvent, { type: 'BIND' }>,
    publish: PublishBinding,
    request?: { deadline: number; cancel?: Cancellation },
  ): Promise<SessionOutcome | undefined> {
    return this.machines.exclusive(sid, async () => {
      const key = String(sid);
      const bind = { publish, published: false };
      this.binds.set(key, bind);
      let outcome: HostOutcome<SessionMachine, SessionSeen> | undefined;
      try {
        outcome = request
          ? await this.withRequest(sid, { deadline: request.deadline, cancel: request.cancel }, () =>
              this.machines.sendNow(sid, event),
            )
          : await this.machines.sendNow(sid, event);
      } finally {
        this.binds.delete(key);
      }
      if (!outcome) return undefined;
      const result = outcomeOf(outcome);
      // Bound again to the same user: nothing of the session changed, and the binding is made again (the newest wins).
      if (!bind.published && isBound(result)) await publish({ medium: result.medium, address: result.address }, null);
      return result;
    });
  }

  /** For the debug endpoint: the session's state, context and history, or undefined. */
  async inspect(sid: number): Promise<{ state: string; context: SessionContext; history: Transition[] } | undefined> {
    const found = await this.machines.peek(sid);
    return found && { state: found.state, context: found.snapshot.context, history: found.history };
  }

  /** The session actors in memory (those with an event in flight) and their states: a sid and a state name. */
  *liveStates(): Generator<{ id: string; state: string }> {
    for (const { key, state } of this.machines.inFlight()) yield { id: `session:${key}`, state };
  }

  /** The same, counted by state (kept as actors start, move and stop: nothing is walked). */
  liveCounts(): { total: number; byState: Record<string, number> } {
    return this.machines.liveCounts();
  }

  stopAll(): void {
    this.machines.stopAll();
  }

  /**
   * Runs `fn` with the request's deadline and cancellation known to the session's writes and the send it may start, and
   * the time it may wait for the send.
   */
  private async withRequest<T>(
    sid: number,
    request: { deadline: number; cancel: Cancellation | undefined },
    fn: (settleTimeoutMs: number) => Promise<T>,
  ): Promise<T> {
    const key = String(sid);
    const sendBy = request.deadline - RECORD_MARGIN_MS;
    this.sessionRequests.set(key, { deadline: request.deadline, sendBy, cancel: request.cancel });
    try {
      // The sender gives up at its deadline, so the machine has left sendingToken by then.
      return await fn(Math.max(0, sendBy - Date.now()) + SEND_SETTLE_MS);
    } finally {
      this.sessionRequests.delete(key);
    }
  }

  /** The deadline and cancellation of the request an event of `sid` is processed for; none outside a request. */
  private requestOf(sid: number): CallOptions | undefined {
    const request = this.sessionRequests.get(String(sid));
    return request && callOptions(request);
  }

  private async load(sid: number): Promise<StoredMachine<SessionSeen> | undefined> {
    const stored = await this.deps.reads.load(sid);
    if (!stored) return undefined;
    const { sydent, machine } = stored;
    const seen: SessionSeen = {
      sydent: {
        validated: sydent.validated,
        mtime: sydent.mtime,
        token: sydent.token,
        sendAttemptNumber: sydent.sendAttemptNumber,
      },
      row: sydent,
      storedAddress: sydent.address,
    };
    if (machine) {
      return {
        state: machine.state,
        context: JSON.parse(machine.context) as unknown,
        machineVersion: machine.machine_version,
        rowVersion: machine.row_version,
        history: (JSON.parse(machine.history) as Transition[]).map(inMachineNames),
        seen,
      };
    }
    // A session only Sydent knows: its rows are all there is, read in today's shape.
    const { state, context } = sessionFromSydentRow(sydent);
    return {
      state: valueOf(state),
      context,
      machineVersion: SESSION_MACHINE_VERSION,
      rowVersion: null,
      history: [],
      seen,
    };
  }

  private async save(
    sid: number,
    write: MachineWrite<SessionContext>,
    expected: RowExpectation<SessionSeen>,
  ): Promise<RowExpectation<SessionSeen>> {
    const context = write.context;
    const row: SessionWrite = {
      sid,
      state: write.state,
      context: write.contextJson,
      machineVersion: write.machineVersion,
      address: context.address,
      validated: context.validatedAt !== null,
      mtime: context.mtime,
      token: context.token,
      sendAttempt: context.sendAttempt,
      history: write.history,
      now: this.deps.now(),
      expectedSydent: expected.seen?.sydent ?? null,
    };
    const rowVersion = write.created
      ? await this.deps.store.create(context.medium, context.clientSecret, row, this.requestOf(sid))
      : await this.saveRow(sid, write.stateName, context, row, expected.rowVersion);
    return {
      rowVersion,
      seen: {
        sydent: {
          validated: row.validated ? 1 : 0,
          mtime: row.mtime,
          token: row.token,
          sendAttemptNumber: row.sendAttempt,
        },
        row: expected.seen?.row ?? null,
        storedAddress: expected.seen?.storedAddress ?? context.address,
      },
    };
  }

  /** A session's row saved; its move to bound, by the bind that asked for it, in one write with the binding. */
  private async saveRow(
    sid: number,
    stateName: string,
    context: SessionContext,
    row: SessionWrite,
    expectedVersion: number | null,
  ): Promise<number> {
    const bind = this.binds.get(String(sid));
    if (!bind || bind.published || stateName !== 'bound')
      return this.deps.store.save(row, expectedVersion, this.requestOf(sid));
    bind.published = true;
    const rowVersion = await bind.publish(
      { medium: context.medium, address: context.address },
      { write: row, expectedVersion },
    );
    if (rowVersion === null) throw new Error(`session ${sid}: its binding was stored without the session`);
    return rowVersion;
  }
}

/**
 * A session as it goes on after a restore. A send in flight when the process stopped may or may not have reached
 * the user: the token it carried is accepted, and the same send_attempt sends again (an interrupted send is not
 * a send). Then whatever Sydent did to the rows since our last save.
 */
function restoreSession(
  state: MachineState<SessionContext>,
  stored: StoredMachine<SessionSeen>,
): MachineState<SessionContext> {
  let loaded: LoadedSession = { state: names.nameOf(state.value), context: state.context };
  if (loaded.state === 'sendingToken') {
    loaded = {
      state: 'sendFailed',
      context: { ...loaded.context, everSent: true, lastError: 'interrupted by a restart' },
    };
  }
  if (stored.rowVersion !== null && stored.seen?.row) loaded = reconcileWithSydent(loaded, stored.seen.row);
  return { value: valueOf(loaded.state), context: loaded.context };
}

function callOptions(request: { deadline: number; cancel?: Cancellation | undefined }): CallOptions {
  return request.cancel ? { deadline: request.deadline, cancel: request.cancel } : { deadline: request.deadline };
}

/** How the send ended, named as the machine (and its diagram) names the event: `done: sendToken` or `error: sendToken`. */
function settledEvent(to: string): string {
  return eventsBetween(validationSessionMachine, 'sendingToken', to)[0] ?? `sendingToken → ${to}`;
}

/** Rows written before the history used the machine's names said `new` for the initial state and `SENT` for a send's end. */
function inMachineNames(t: Transition): Transition {
  const from = t.from === 'new' ? 'requested' : t.from;
  const event = t.event === 'SENT' && from === 'sendingToken' ? settledEvent(t.to) : t.event;
  return { ...t, from, event };
}

/** Whether a session is bound now by the event it took. */
function isBound(outcome: SessionOutcome): boolean {
  return outcome.rejection === null && outcome.state === 'bound';
}

/** Whether a session proves its 3PID: validated (or bound since), and the event was not refused. */
export function isValidated(outcome: SessionOutcome): boolean {
  return outcome.rejection === null && (outcome.state === 'validated' || outcome.state === 'bound');
}

/** `{ limited: false, ...outcome }`, without V8's slow path for a spread copy (bench/README.md) */
function limitedNot(outcome: SessionOutcome): RequestTokenResult {
  return Object.assign({ limited: false as const }, outcome);
}

function outcomeOf(outcome: HostOutcome<SessionMachine, SessionSeen>): SessionOutcome {
  const context = outcome.snapshot.context;
  return sessionOutcome(context, outcome.state, context.rejection, outcome.seen?.storedAddress ?? context.address);
}

/** What a request is told of a session in `state` (the machine's, or the repeat fast path's reading of the rows). */
export function sessionOutcome(
  context: SessionContext,
  state: string,
  rejection: Rejection | null,
  storedAddress: string,
): SessionOutcome {
  return {
    sid: context.sid,
    state,
    rejection,
    lastError: context.lastError,
    medium: context.medium,
    address: context.address,
    storedAddress,
    validatedAt: context.validatedAt,
    mtime: context.mtime,
    nextLink: context.nextLink,
    brand: context.brand,
    mxid: context.mxid,
    createdBySydent: context.createdBySydent,
  };
}
