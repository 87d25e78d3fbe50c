/**
 * One 3PID validation session: the user asks for a token, receives it by mail or SMS, submits it, and a
 * homeserver binds the validated 3PID to a Matrix user.
 *
 *   live: requested ──▶ sendingToken ──done──▶ awaitingToken.tokenSent ──right token──▶ validated ──BIND──▶ bound
 *                          │  ▲       └─error─▶ awaitingToken.sendFailed    └─5th wrong token─▶ locked
 *                          │  └── requestToken with a newer send_attempt (a failed send: the same one too)
 *   live ──any event [isExpired]──▶ expired ──REQUEST_TOKEN──▶ sendingToken (a fresh token)
 *   sendFailed ──done──▶ tokenSent: a send that ended after another node read the session, taking it for one a
 *                        restart had cut short (restore turns a stored sendingToken into sendFailed)
 *
 * What every event goes through is written once, on `live`, in Sydent's order: the client secret, then expiry,
 * then the state's own rule. `live` raises the event again as `<TYPE>.ok` once both checks passed, and its states
 * take only those, so none of them repeats the checks. An expired session leaves `live` by the one guarded
 * transition to `expired`, which answers the event itself. The two states that await a token share what a
 * submitted token does in `awaitingToken`.
 *
 * The machine is pure. Time arrives inside events (`now`), sending the token is the `sendToken` actor that the
 * sessions supervisor provides, and expiry is a guard over the stored `mtime`, never a timer: a restored session
 * expires exactly as one that stayed in memory. States are named by their own keys (`tokenSent`), as the
 * diagrams, metrics and debug endpoints give them (machines/state-value.ts).
 */
import { and, assign, fromPromise, not, raise, setup } from 'xstate';
import { decodeStateValue, stateNames, type MachineState, type Migration } from './state-value.js';
import { errorMessage } from '../util/error-message.js';

/**
 * Bumped when what is persisted changes shape, so old rows are migrated on restore (see `sessionMigrations`):
 * 2 counts wrong tokens (`wrongTokens`); 3 nests the states under `live` (and `live.awaitingToken`).
 */
export const SESSION_MACHINE_VERSION = 3;

/** A session can be used for 24 h after its last modification (spec; Sydent's THREEPID_SESSION_*_MS). */
export const SESSION_LIFETIME_MS = 24 * 60 * 60 * 1000;

/**
 * Wrong tokens a session takes against one token; the one that reaches it voids the token (state `locked`) until
 * a requestToken with a higher send_attempt sends a new one. An SMS code has 10^6 values: 5 guesses per code sent.
 */
export const MAX_WRONG_TOKENS = 5;
/**
 * A requestToken that sends nothing moves the session's mtime only once it is this much older: a client repeating
 * its request (the same send_attempt) reads the session without writing it. Sydent moves mtime on every requestToken;
 * here the 24 h windows and `validated_at` start at most this long before the latest repeat.
 */
export const REPEAT_TOUCH_EVERY_MS = 60_000;

export type Medium = 'email' | 'msisdn';

/** Why the last event was refused: the supervisor turns it into the Matrix error. */
export type Rejection = 'secretMismatch' | 'tokenIncorrect' | 'tokenLocked' | 'expired' | 'notValidated' | 'sendFailed';

export interface SessionContext {
  sid: string;
  medium: Medium;
  /** the normalised 3PID: casefolded email, or E.164 digits without '+' */
  address: string;
  /** where the token goes, as the user typed it */
  sendTo: string;
  clientSecret: string;
  token: string;
  /** wrong tokens submitted against `token`; at MAX_WRONG_TOKENS the token is void (state `locked`) */
  wrongTokens: number;
  /** the highest send_attempt that led to a send; -1 before the first */
  sendAttempt: number;
  /** last modification (ms): creation, every requestToken, validation */
  mtime: number;
  validatedAt: number | null;
  nextLink: string | null;
  brand: string | null;
  /** who asked for the last token (the `ipaddress` mail variable) */
  ipAddress: string | null;
  /** a token has (or, after a send cut short by a restart, may have) reached the SMTP server or SMS provider */
  everSent: boolean;
  /** the Matrix user the 3PID was last bound to */
  mxid: string | null;
  /** Sydent created the session before the switch (its mails carry their own nextLink) */
  createdBySydent: boolean;
  /** why the last event was refused; null when it was accepted */
  rejection: Rejection | null;
  lastError: string | null;
}

type SessionInput = Omit<
  SessionContext,
  'validatedAt' | 'mxid' | 'rejection' | 'lastError' | 'everSent' | 'wrongTokens' | 'createdBySydent'
>;

/**
 * A new session's context, field by field: V8 (Node 20) gives an object made by spreading another a map of its own,
 * so each property added after the spread builds a new map, some 2 µs apiece (bench/README.md, "Code shaped by
 * measurements"). The type names every field, so none can be left out.
 */
function newSessionContext(input: SessionInput): SessionContext {
  return {
    sid: input.sid,
    medium: input.medium,
    address: input.address,
    sendTo: input.sendTo,
    clientSecret: input.clientSecret,
    token: input.token,
    wrongTokens: 0,
    sendAttempt: input.sendAttempt,
    mtime: input.mtime,
    validatedAt: null,
    nextLink: input.nextLink,
    brand: input.brand,
    ipAddress: input.ipAddress,
    everSent: false,
    mxid: null,
    createdBySydent: false,
    rejection: null,
    lastError: null,
  };
}

/** The events a session takes from outside. Each names the session's client secret, which is checked first. */
export type SessionEvent =
  | {
      type: 'REQUEST_TOKEN';
      clientSecret: string;
      sendAttempt: number;
      nextLink: string | null;
      brand: string | null;
      sendTo: string;
      /** the requester's IP, for the `ipaddress` template variable */
      ipAddress: string | null;
      /** the token a revived (expired) or renewed (locked) session goes on with; randomness stays outside the machine */
      freshToken: string;
      now: number;
    }
  | { type: 'SUBMIT_TOKEN'; token: string; clientSecret: string; now: number }
  | { type: 'CHECK_VALIDATED'; clientSecret: string; now: number }
  | { type: 'BIND'; mxid: string; clientSecret: string; now: number };

/** An event that passed the secret and expiry checks, as the live states receive it. */
type CheckedEvent = SessionEvent extends infer E
  ? E extends { type: infer T extends string }
    ? Omit<E, 'type'> & { type: `${T}.ok` }
    : never
  : never;

type MachineEvent = SessionEvent | CheckedEvent;

/** What the sendToken actor is given: the context's fields that the mail or SMS and its link are made of. */
export type SendTokenInput = Pick<
  SessionContext,
  'sid' | 'medium' | 'address' | 'sendTo' | 'clientSecret' | 'token' | 'nextLink' | 'brand' | 'ipAddress'
>;

/**
 * Constant-time comparison of two strings, so a token cannot be guessed character by character. Compared by UTF-16
 * code unit, without copying either into a buffer (the guards run it several times per event).
 */
export function sameSecret(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

const expiredAt = (context: SessionContext, now: number) => now > context.mtime + SESSION_LIFETIME_MS;

const isRequest = (event: MachineEvent): event is Extract<MachineEvent, { sendAttempt: number }> =>
  'sendAttempt' in event;

const sessionSetup = setup({
  types: {
    context: {} as SessionContext,
    events: {} as MachineEvent,
    input: {} as SessionInput,
  },
  actors: {
    // Provided by the sessions supervisor: mail for email, SMS for msisdn. Resolves once the message is accepted.
    sendToken: fromPromise<void, SendTokenInput>(async () => {
      throw new Error('sendToken is provided by the sessions supervisor');
    }),
  },
  guards: {
    isExpired: ({ context, event }) => 'now' in event && expiredAt(context, event.now),
    isNewerSendAttempt: ({ context, event }) => isRequest(event) && event.sendAttempt > context.sendAttempt,
    /** after a failed send, the same send_attempt again is a retry of a send that did not happen */
    isNotOlderAttempt: ({ context, event }) => isRequest(event) && event.sendAttempt >= context.sendAttempt,
    secretMatches: ({ context, event }) =>
      'clientSecret' in event && sameSecret(event.clientSecret, context.clientSecret),
    /** a token went out at least once (a failed send keeps the token of an earlier one that arrived) */
    wasSentBefore: ({ context }) => context.everSent,
    tokenMatches: ({ context, event }) => 'token' in event && sameSecret(event.token, context.token),
    /** this wrong token is the last one the current token takes */
    reachesWrongTokenCap: ({ context }) => context.wrongTokens + 1 >= MAX_WRONG_TOKENS,
    secretMismatch: not('secretMatches'),
    sentTokenMatches: and(['tokenMatches', 'wasSentBefore']),
  },
  actions: {
    /** the event passed the secret and expiry checks: the state's own rule takes it as `<TYPE>.ok` */
    passChecked: raise(({ event }) => ({ ...event, type: `${event.type}.ok` }) as CheckedEvent),
    /** the same event again, for the state just entered to answer (an expired session answers for itself) */
    forward: raise(({ event }) => event),
    accept: assign({ rejection: null }),
    touch: assign({ mtime: ({ context, event }) => ('now' in event ? event.now : context.mtime) }),
    /** the same, for a request that changes nothing else: not before REPEAT_TOUCH_EVERY_MS */
    touchIfStale: assign({
      mtime: ({ context, event }) =>
        'now' in event && event.now - context.mtime >= REPEAT_TOUCH_EVERY_MS ? event.now : context.mtime,
    }),
    /**
     * A requestToken that sends: accepted, the session touched, the request's nextLink, brand, address and IP kept
     * for the mail, and its send_attempt recorded. One assignment, not four: each copies the whole context.
     */
    acceptSend: assign(({ context, event }) =>
      isRequest(event)
        ? {
            rejection: null,
            mtime: event.now,
            nextLink: event.nextLink,
            brand: event.brand,
            sendTo: event.sendTo,
            ipAddress: event.ipAddress,
            sendAttempt: event.sendAttempt,
          }
        : { rejection: null, mtime: 'now' in event ? event.now : context.mtime },
    ),
    recordSent: assign({ lastError: null, everSent: true }),
    recordSendFailure: assign({
      rejection: 'sendFailed' as const,
      lastError: ({ event }) => {
        const error = (event as { error?: unknown }).error;
        return errorMessage(error);
      },
    }),
    /** a revived session starts over: the old token and validation no longer count */
    restart: assign({
      everSent: false,
      validatedAt: null,
      mxid: null,
      sendAttempt: -1,
      token: ({ context, event }) => (isRequest(event) ? event.freshToken : context.token),
      wrongTokens: 0,
    }),
    /** a locked session gets a new token, never sent yet, that nobody has guessed at */
    renewToken: assign({
      token: ({ context, event }) => (isRequest(event) ? event.freshToken : context.token),
      wrongTokens: 0,
      everSent: false,
    }),
    countWrongToken: assign({ wrongTokens: ({ context }) => context.wrongTokens + 1 }),
    rejectSendFailed: assign({ rejection: 'sendFailed' as const }),
    markValidated: assign({
      validatedAt: ({ context, event }) => context.validatedAt ?? ('now' in event ? event.now : null),
      mtime: ({ context, event }) => ('now' in event ? event.now : context.mtime),
    }),
    recordBinding: assign({ mxid: ({ event }) => ('mxid' in event ? event.mxid : null) }),
    rejectSecret: assign({ rejection: 'secretMismatch' as const }),
    rejectToken: assign({ rejection: 'tokenIncorrect' as const }),
    rejectLocked: assign({ rejection: 'tokenLocked' as const }),
    rejectExpired: assign({ rejection: 'expired' as const }),
    rejectNotValidated: assign({ rejection: 'notValidated' as const }),
  },
});

// Rules several states share, each written once.

/** Every event names the session's client secret; a wrong one is refused before anything else is looked at. */
const wrongSecret = { guard: 'secretMismatch', actions: 'rejectSecret' } as const;
/** The gate of the live states: the secret, then expiry (the one guarded way out to `expired`), then the state. */
const gate = [
  wrongSecret,
  { guard: 'isExpired', target: 'expired', actions: 'forward' },
  { actions: 'passChecked' },
] as const;
/** A requestToken that leads to a send. */
const send = ['acceptSend'] as const;
/** A requestToken that sends nothing: the same send_attempt again answers success with the same sid. */
const nothingToSend = { actions: ['accept', 'touchIfStale'] } as const;
/** A submitToken while a token is awaited: a token that went out validates; a wrong one counts, the last one locks. */
const awaitToken = [
  { guard: 'sentTokenMatches', target: '#validationSession.live.validated', actions: ['accept', 'markValidated'] },
  {
    guard: 'reachesWrongTokenCap',
    target: '#validationSession.live.locked',
    actions: ['countWrongToken', 'rejectToken'],
  },
  { actions: ['countWrongToken', 'rejectToken'] },
] as const;
/** Once validated (bound or not): asking again is harmless, the right token again answers success (as in Sydent). */
const afterValidation = {
  'REQUEST_TOKEN.ok': { actions: 'accept' },
  'SUBMIT_TOKEN.ok': [{ guard: 'tokenMatches', actions: 'accept' }, { actions: 'rejectToken' }],
  'CHECK_VALIDATED.ok': { actions: 'accept' },
  // Binding again (to the same or another user) is allowed while the session lives: the newest binding wins.
  'BIND.ok': { target: 'bound', actions: ['accept', 'recordBinding'] },
} as const;

export const validationSessionMachine = sessionSetup.createMachine({
  id: 'validationSession',
  context: ({ input }) => newSessionContext(input),
  initial: 'live',
  states: {
    live: {
      initial: 'requested',
      on: {
        REQUEST_TOKEN: gate,
        SUBMIT_TOKEN: gate,
        CHECK_VALIDATED: gate,
        BIND: gate,
        // What a state that has no rule of its own for a checked event answers.
        'SUBMIT_TOKEN.ok': { actions: 'rejectNotValidated' },
        'CHECK_VALIDATED.ok': { actions: 'rejectNotValidated' },
        'BIND.ok': { actions: 'rejectNotValidated' },
      },
      states: {
        requested: {
          on: { 'REQUEST_TOKEN.ok': { target: 'sendingToken', actions: send } },
        },
        sendingToken: {
          invoke: {
            id: 'sendToken',
            src: 'sendToken',
            input: ({ context }) => ({
              sid: context.sid,
              medium: context.medium,
              address: context.address,
              sendTo: context.sendTo,
              clientSecret: context.clientSecret,
              token: context.token,
              nextLink: context.nextLink,
              brand: context.brand,
              ipAddress: context.ipAddress,
            }),
            onDone: { target: 'awaitingToken.tokenSent', actions: 'recordSent' },
            onError: { target: 'awaitingToken.sendFailed', actions: 'recordSendFailure' },
          },
        },
        // A token is (or may be) out there: the right one validates, wrong ones count and the last one locks.
        awaitingToken: {
          initial: 'tokenSent',
          on: { 'SUBMIT_TOKEN.ok': awaitToken },
          states: {
            tokenSent: {
              on: {
                'REQUEST_TOKEN.ok': [
                  { guard: 'isNewerSendAttempt', target: '#validationSession.live.sendingToken', actions: send },
                  nothingToSend,
                ],
              },
            },
            // The last send failed; a token sent by an earlier, successful attempt is still good.
            sendFailed: {
              on: {
                // A send still running on another node when this session was last read there, which took it for one
                // a restart cut short: it ended after all, and its token went out.
                'xstate.done.actor.sendToken': {
                  target: 'tokenSent',
                  actions: ['accept', 'recordSent'],
                },
                // A send that failed is not a send: the same send_attempt tries again. Only an older one is refused.
                'REQUEST_TOKEN.ok': [
                  { guard: 'isNotOlderAttempt', target: '#validationSession.live.sendingToken', actions: send },
                  { actions: ['touch', 'rejectSendFailed'] },
                ],
              },
            },
          },
        },
        // Too many wrong tokens: this token no longer validates anything, not even when right. Only a new token,
        // sent by a requestToken with a higher send_attempt, opens the session again.
        locked: {
          on: {
            'REQUEST_TOKEN.ok': [
              { guard: 'isNewerSendAttempt', target: 'sendingToken', actions: [...send, 'renewToken'] },
              nothingToSend,
            ],
            'SUBMIT_TOKEN.ok': { actions: 'rejectLocked' },
          },
        },
        validated: { on: afterValidation },
        bound: { on: afterValidation },
      },
    },
    expired: {
      on: {
        // The same (address, client_secret) asking again revives the session with a fresh token.
        REQUEST_TOKEN: [wrongSecret, { target: '#validationSession.live.sendingToken', actions: ['restart', ...send] }],
        SUBMIT_TOKEN: [wrongSecret, { actions: 'rejectExpired' }],
        CHECK_VALIDATED: [wrongSecret, { actions: 'rejectExpired' }],
        BIND: [wrongSecret, { actions: 'rejectExpired' }],
      },
    },
  },
});

/** A session's state by name: the live states are named without their parent, as the diagram draws them. */
export const SESSION_STATES = [
  'requested',
  'sendingToken',
  'tokenSent',
  'sendFailed',
  'locked',
  'validated',
  'bound',
  'expired',
] as const;

/**
 * What older machine versions stored, in the shape the next one stores (`migrations[n]`: version n → n + 1),
 * applied in turn when a session is restored. Rows are never rewritten in bulk: a row changes shape when its
 * session next changes.
 */
export const sessionMigrations: Record<number, Migration> = {
  // Version 1 did not count wrong tokens: its sessions start from none.
  1: ({ value, context }) => ({ value, context: { ...context, wrongTokens: 0 } }),
  // Version 2 had no parent states (`live`, `awaitingToken`): its states were top-level names. Rows written before `createdBySydent`
  // existed were sessions of ours.
  2: ({ value, context }) => ({
    value:
      value === 'tokenSent' || value === 'sendFailed'
        ? { live: { awaitingToken: value } }
        : typeof value === 'string' && value !== 'expired'
          ? { live: value }
          : value,
    context: { createdBySydent: false, ...context },
  }),
};

/**
 * The name of the state a `session_machines.state` column holds (`tokenSent` for `{"live":"tokenSent"}`, and for
 * the plain `tokenSent` an older machine version wrote): how counts by state read the column.
 */
export function sessionStateName(column: string, machineVersion: number): string {
  let state: MachineState<Record<string, unknown>> = { value: decodeStateValue(column), context: {} };
  for (let v = machineVersion; v < SESSION_MACHINE_VERSION; v++) state = sessionMigrations[v]?.(state) ?? state;
  return stateNames(validationSessionMachine).nameOf(state.value);
}
