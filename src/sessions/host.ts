/**
 * Hosts the live validation-session actors for the sessions supervisor: restores a session from its rows when
 * it is touched, feeds it one event at a time, persists every transition before answering, and evicts idle
 * actors. The persisted row is the source of truth; an actor in memory is only a cache of it.
 */
import { createActor, fromPromise, transition, waitFor, type Actor } from 'xstate';
import type { Admission } from '../util/rate-limiter.js';
import type { ActorInspect } from '../actors/deps.js';
import { eventsBetween } from '../machines/export.js';
import {
  SESSION_MACHINE_VERSION,
  validationSessionMachine,
  type Medium,
  type Rejection,
  type SendTokenInput,
  type SessionContext,
  type SessionEvent,
} from '../machines/validation-session.js';
import type { SessionWrite, StoredSession, SydentColumns, Transition } from '../store/sessions.js';
import { sameSydentColumns, SessionConflictError } from '../store/sessions.js';
import { reconcileWithSydent, sessionFromSydentRow, type LoadedSession } from './sydent-rows.js';

/**
 * Sends a session's token by mail or SMS, resolving once the server or provider accepted it. By `deadline`
 * (Date.now() time, not the session clock), or when `signal` aborts, the send is aborted (no message arrives
 * later) and the session records a failed send.
 */
export type TokenSender = (input: SendTokenInput, request: { deadline: number; signal?: AbortSignal }) => Promise<void>;

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

/** The store writes the host needs, answered by the store actor. */
export interface SessionStorePort {
  newSid(): Promise<number>;
  create(medium: Medium, clientSecret: string, write: SessionWrite): Promise<number>;
  save(write: SessionWrite, expectedVersion: number | null): Promise<number>;
}

export interface SessionHostDeps {
  now: () => number;
  reads: SessionReadPort;
  store: SessionStorePort;
  senders: Partial<Record<Medium, TokenSender>>;
  /** rate limit for the sender of a token, consulted only when a token will really be sent */
  admit: (medium: Medium, key: string) => Promise<Admission>;
  newToken: (medium: Medium) => string;
  idleMs?: number;
  /** told of every state change (metrics) */
  onTransition?: (from: string, to: string) => void;
  /** `--inspect` */
  inspect?: ActorInspect;
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

type SessionActor = Actor<typeof validationSessionMachine>;

/** What the invoked send of a session must keep to, while one of its events is processed. */
interface SendRequest {
  /** Date.now() time by which the send must have ended */
  sendBy: number;
  signal: AbortSignal | undefined;
  /** settles once the session's row says it is sending (rejects when that write failed) */
  recorded: Promise<void>;
}

interface Live {
  actor: SessionActor;
  version: number | null;
  history: Transition[];
  lastUsed: number;
  /** Sydent's columns as last read or written: a row that no longer says this was changed by someone else */
  sydentSeen: SydentColumns | null;
  storedAddress: string;
}

const stateOf = (actor: SessionActor): string => String(actor.getSnapshot().value);

export class SessionHost {
  private readonly live = new Map<number, Live>();
  /** per-session queues: one event at a time per sid, any number of sids at once */
  private readonly locks = new Map<number | string, Promise<unknown>>();
  /** the request whose event is being processed, by sid: the time the invoked send must keep to, its cancellation */
  private readonly sendRequests = new Map<string, SendRequest>();
  private readonly machine;

  constructor(private readonly deps: SessionHostDeps) {
    this.machine = validationSessionMachine.provide({
      actors: {
        sendToken: fromPromise<void, SendTokenInput>(async ({ input }) => {
          const send = deps.senders[input.medium];
          if (!send) throw new Error(`no sender for ${input.medium}`);
          const request = this.sendRequests.get(input.sid);
          // Record, then act: nothing is sent before the session's row says it is being sent.
          if (request) await request.recorded;
          const deadline = request?.sendBy ?? Date.now() + REQUEST_TOKEN_TIME_LIMIT_MS;
          if (deadline - Date.now() < MIN_SEND_TIME_MS) throw new Error('no time was left to send the token');
          await send(input, { deadline, ...(request?.signal ? { signal: request.signal } : {}) });
        }),
      },
    });
  }

  /** One requestToken per (medium, address, client_secret) at a time, so two racing requests share a session. */
  async requestToken(args: RequestTokenArgs, signal?: AbortSignal): Promise<RequestTokenResult> {
    return this.locked(`${args.medium}\0${args.address}\0${args.clientSecret}`, () => this.requestTokenLocked(args, signal));
  }

  private async requestTokenLocked(args: RequestTokenArgs, signal: AbortSignal | undefined): Promise<RequestTokenResult> {
    const event = (freshToken: string): SessionEvent => ({
      type: 'REQUEST_TOKEN',
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
      return this.withSession(existing, async (live) => {
        const ev = event(this.deps.newToken(args.medium));
        const [next] = transition(this.machine, live.actor.getSnapshot(), ev);
        if (next.matches('sendingToken')) {
          const admission = await this.deps.admit(args.medium, args.requester);
          if (!admission.ok) return { limited: true, retryAfterMs: admission.retryAfterMs };
        }
        return { limited: false, ...(await this.process(existing, live, ev, undefined, { deadline: args.deadline, signal })) };
      });
    }

    const admission = await this.deps.admit(args.medium, args.requester);
    if (!admission.ok) return { limited: true, retryAfterMs: admission.retryAfterMs };
    const sid = await this.deps.store.newSid();
    return this.locked(sid, async () => {
      const token = this.deps.newToken(args.medium);
      const actor = createActor(this.machine, {
        ...this.inspectOption(),
        input: {
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
        },
      });
      actor.start();
      const live: Live = { actor, version: null, history: [], lastUsed: this.deps.now(), sydentSeen: null, storedAddress: args.address };
      this.live.set(sid, live);
      try {
        return { limited: false, ...(await this.process(sid, live, event(token), args.clientSecret, { deadline: args.deadline, signal })) };
      } catch (error) {
        // A session exists only once its row does, and only as its row says: a failed write leaves no actor behind.
        this.forget(sid, live);
        throw error;
      }
    });
  }

  /** `undefined` when there is no such session. */
  async send(sid: number, event: SessionEvent): Promise<SessionOutcome | undefined> {
    if (!(await this.deps.reads.load(sid)) && !this.live.has(sid)) return undefined;
    return this.withSession(sid, (live) => this.process(sid, live, event));
  }

  /** For the debug endpoint: the session's state, context and history, or undefined. */
  async inspect(sid: number): Promise<{ state: string; context: SessionContext; history: Transition[] } | undefined> {
    if (!(await this.deps.reads.load(sid)) && !this.live.has(sid)) return undefined;
    return this.withSession(sid, async (live) => ({
      state: stateOf(live.actor),
      context: live.actor.getSnapshot().context,
      history: live.history,
    }));
  }

  private inspectOption(): { inspect?: ActorInspect } {
    return this.deps.inspect ? { inspect: this.deps.inspect } : {};
  }

  liveCount(): number {
    return this.live.size;
  }

  /** The session actors in memory and their states (no secrets: a sid and a state name), one at a time. */
  *liveStates(): Generator<{ id: string; state: string }> {
    for (const [sid, live] of this.live) yield { id: `session:${sid}`, state: stateOf(live.actor) };
  }

  /** Drops actors idle for longer than `idleMs`; their rows are already saved. */
  evictIdle(): void {
    const cutoff = this.deps.now() - (this.deps.idleMs ?? 5 * 60_000);
    for (const [sid, live] of this.live) {
      if (live.lastUsed < cutoff && !this.locks.has(sid)) {
        live.actor.stop();
        this.live.delete(sid);
      }
    }
  }

  stopAll(): void {
    for (const live of this.live.values()) live.actor.stop();
    this.live.clear();
  }

  private async withSession<T>(sid: number, fn: (live: Live) => Promise<T>): Promise<T> {
    return this.locked(sid, async () => {
      const stored = await this.deps.reads.load(sid);
      let live = this.live.get(sid);
      // A copy in memory is good only while the rows still say what it last saw: another node may have saved a
      // transition, or Sydent written its columns.
      if (live && stored && !this.isCurrent(live, stored)) {
        live.actor.stop();
        this.live.delete(sid);
        live = undefined;
      }
      if (!live) {
        if (!stored) throw new Error(`session ${sid} disappeared`);
        live = this.restore(stored);
        this.live.set(sid, live);
      }
      live.lastUsed = this.deps.now();
      try {
        return await fn(live);
      } catch (error) {
        // Someone else moved the session on, or our save failed: forget our copy, the next event starts from the row.
        this.forget(sid, live);
        throw error;
      }
    });
  }

  private forget(sid: number, live: Live): void {
    live.actor.stop();
    if (this.live.get(sid) === live) this.live.delete(sid);
  }

  private async locked<T>(sid: number | string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(sid) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const tail = run.catch(() => undefined);
    this.locks.set(sid, tail);
    try {
      return await run;
    } finally {
      if (this.locks.get(sid) === tail) this.locks.delete(sid);
    }
  }

  private isCurrent(live: Live, stored: StoredSession): boolean {
    const version = stored.machine?.row_version ?? null;
    return version === live.version && (live.sydentSeen === null || sameSydentColumns(live.sydentSeen, stored.sydent));
  }

  private restore(stored: StoredSession): Live {
    const { sydent, machine } = stored;
    let loaded: LoadedSession;
    if (machine) {
      loaded = {
        state: machine.state,
        context: upgradeContext(machine.machine_version, JSON.parse(machine.context) as SessionContext),
      };
      // A send in flight when the process stopped was never acknowledged: the client sees a failed send, and the
      // same send_attempt tries again.
      if (loaded.state === 'sendingToken') {
        loaded = { state: 'sendFailed', context: { ...loaded.context, lastError: 'interrupted by a restart' } };
      }
      loaded = reconcileWithSydent(loaded, sydent);
    } else {
      loaded = sessionFromSydentRow(sydent);
    }
    const { state, context } = loaded;
    const snapshot = this.machine.resolveState({ value: state, context });
    // input is required by the types but unused: the snapshot already holds the context
    const actor = createActor(this.machine, { snapshot, input: context, ...this.inspectOption() });
    actor.start();
    return {
      actor,
      version: machine?.row_version ?? null,
      history: machine ? (JSON.parse(machine.history) as Transition[]).map(inMachineNames) : [],
      lastUsed: this.deps.now(),
      sydentSeen: { validated: sydent.validated, mtime: sydent.mtime, token: sydent.token, sendAttemptNumber: sydent.sendAttemptNumber },
      storedAddress: sydent.address,
    };
  }

  private async process(
    sid: number,
    live: Live,
    event: SessionEvent,
    newSecret?: string,
    request: { deadline: number; signal?: AbortSignal | undefined } = { deadline: Date.now() + REQUEST_TOKEN_TIME_LIMIT_MS },
  ): Promise<SessionOutcome> {
    const from = stateOf(live.actor);
    const key = String(sid);
    const sendBy = request.deadline - RECORD_MARGIN_MS;
    let recordedOk!: () => void;
    let recordFailed!: (error: unknown) => void;
    const recorded = new Promise<void>((resolve, reject) => {
      recordedOk = resolve;
      recordFailed = reject;
    });
    // A send that never starts (its row could not be written) must not leave an unhandled rejection behind.
    recorded.catch(() => undefined);
    this.sendRequests.set(key, { sendBy, signal: request.signal, recorded });
    try {
      live.actor.send(event);
      if (live.actor.getSnapshot().matches('sendingToken')) {
        // Recorded before the send (the sender waits for it), so a crash mid-send is seen after restart, and a
        // failed write sends nothing.
        try {
          await this.persist(sid, live, from, event.type, newSecret);
        } catch (error) {
          recordFailed(error);
          throw error;
        }
        recordedOk();
        // The sender gives up at its deadline, so the machine has left sendingToken by then.
        const timeout = Math.max(0, sendBy - Date.now()) + SEND_SETTLE_MS;
        await waitFor(live.actor, (s) => !s.matches('sendingToken'), { timeout });
        await this.persist(sid, live, 'sendingToken', settledEvent(stateOf(live.actor)), undefined);
      } else {
        recordedOk();
        await this.persist(sid, live, from, event.type, newSecret);
      }
    } finally {
      this.sendRequests.delete(key);
    }
    return outcomeOf(live.actor.getSnapshot().context, stateOf(live.actor), live.storedAddress);
  }

  private async persist(sid: number, live: Live, from: string, eventType: string, newSecret: string | undefined) {
    const context = live.actor.getSnapshot().context;
    const state = stateOf(live.actor);
    if (from !== state) {
      live.history = [...live.history, { at: this.deps.now(), event: eventType, from, to: state }].slice(-20);
      this.deps.onTransition?.(from, state);
    }
    const write: SessionWrite = {
      sid,
      state,
      context: JSON.stringify(context),
      machineVersion: SESSION_MACHINE_VERSION,
      address: context.address,
      validated: context.validatedAt !== null,
      mtime: context.mtime,
      token: context.token,
      sendAttempt: context.sendAttempt,
      history: live.history,
      now: this.deps.now(),
      expectedSydent: live.sydentSeen,
    };
    live.version =
      newSecret !== undefined && live.version === null
        ? await this.deps.store.create(context.medium, newSecret, write)
        : await this.deps.store.save(write, live.version);
    live.sydentSeen = {
      validated: write.validated ? 1 : 0,
      mtime: write.mtime,
      token: write.token,
      sendAttemptNumber: write.sendAttempt,
    };
  }
}

/** A context persisted by an older machine version, in the current shape. */
function upgradeContext(version: number, context: SessionContext): SessionContext {
  // Version 1 did not count wrong tokens: its sessions start from none.
  if (version < 2) return { ...context, wrongTokens: 0 };
  return context;
}

/** How the send ended, named as the machine (and its diagram) names the event: `done: sendToken` or `error: sendToken`. */
function settledEvent(to: string): string {
  return eventsBetween(validationSessionMachine, 'sendingToken', to)[0] ?? `sendingToken → ${to}`;
}

/** Rows written before the history used the machine's names said `new` for the initial state and `SENT` for a send's end. */
function inMachineNames(t: Transition): Transition {
  const from = t.from === 'new' ? String(validationSessionMachine.config.initial) : t.from;
  const event = t.event === 'SENT' && from === 'sendingToken' ? settledEvent(t.to) : t.event;
  return { ...t, from, event };
}

/** Whether a session proves its 3PID: validated (or bound since), and the event was not refused. */
export function isValidated(outcome: SessionOutcome): boolean {
  return outcome.rejection === null && (outcome.state === 'validated' || outcome.state === 'bound');
}

function outcomeOf(context: SessionContext, state: string, storedAddress: string): SessionOutcome {
  return {
    sid: context.sid,
    state,
    rejection: context.rejection,
    lastError: context.lastError,
    medium: context.medium,
    address: context.address,
    storedAddress,
    validatedAt: context.validatedAt,
    mtime: context.mtime,
    nextLink: context.nextLink,
    brand: context.brand,
    mxid: context.mxid,
    // rows written before the flag existed lack it: those sessions were ours
    createdBySydent: context.createdBySydent ?? false,
  };
}
