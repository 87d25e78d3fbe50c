/**
 * One 3PID validation session: the user asks for a token, receives it by mail or SMS, submits it, and a
 * homeserver binds the validated 3PID to a Matrix user.
 *
 * The machine is pure. Time arrives inside events (`now`), sending the token is the `sendToken` actor that the
 * sessions supervisor provides, and expiry is a guard over the stored `mtime`, never a timer: a restored session
 * expires exactly as one that stayed in memory.
 */
import { and, assign, fromPromise, not, setup } from 'xstate';

/** Bumped when the persisted context's shape changes, so old rows can be migrated on restore (2: `wrongTokens`). */
export const SESSION_MACHINE_VERSION = 2;

/** A session can be used for 24 h after its last modification (spec; Sydent's THREEPID_SESSION_*_MS). */
export const SESSION_LIFETIME_MS = 24 * 60 * 60 * 1000;

/**
 * Wrong tokens a session takes against one token; the one that reaches it voids the token (state `locked`) until
 * a requestToken with a higher send_attempt sends a new one. An SMS code has 10^6 values: 5 guesses per code sent.
 */
export const MAX_WRONG_TOKENS = 5;

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
  /** a token has reached the SMTP server or SMS provider at least once */
  everSent: boolean;
  /** the Matrix user the 3PID was last bound to */
  mxid: string | null;
  /** Sydent created the session before the switch (its mails carry their own nextLink) */
  createdBySydent: boolean;
  /** why the last event was refused; null when it was accepted */
  rejection: Rejection | null;
  lastError: string | null;
}

export type SessionInput = Omit<
  SessionContext,
  'validatedAt' | 'mxid' | 'rejection' | 'lastError' | 'everSent' | 'wrongTokens' | 'createdBySydent'
>;

export type SessionEvent =
  | {
      type: 'REQUEST_TOKEN';
      sendAttempt: number;
      nextLink: string | null;
      brand: string | null;
      sendTo: string;
      /** the requester's IP, for the `ipaddress` template variable */
      ipAddress: string | null;
      /** the token a revived (expired) session starts over with; randomness stays outside the machine */
      freshToken: string;
      now: number;
    }
  | { type: 'SUBMIT_TOKEN'; token: string; clientSecret: string; now: number }
  | { type: 'CHECK_VALIDATED'; clientSecret: string; now: number }
  | { type: 'BIND'; mxid: string; clientSecret: string; now: number };

export interface SendTokenInput {
  ipAddress: string | null;
  sid: string;
  medium: Medium;
  address: string;
  sendTo: string;
  clientSecret: string;
  token: string;
  nextLink: string | null;
  brand: string | null;
}

/** Constant-time comparison of two strings, so a token cannot be guessed character by character. */
export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  if (x.length !== y.length) return false;
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i]! ^ y[i]!;
  return diff === 0;
}

const expiredAt = (context: SessionContext, now: number) => now > context.mtime + SESSION_LIFETIME_MS;

const sessionSetup = setup({
  types: {
    context: {} as SessionContext,
    events: {} as SessionEvent,
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
    isNewerSendAttempt: ({ context, event }) => event.type === 'REQUEST_TOKEN' && event.sendAttempt > context.sendAttempt,
    /** after a failed send, the same send_attempt again is a retry of a send that did not happen */
    isSameOrNewerSendAttempt: ({ context, event }) => event.type === 'REQUEST_TOKEN' && event.sendAttempt >= context.sendAttempt,
    secretMatches: ({ context, event }) => 'clientSecret' in event && sameSecret(event.clientSecret, context.clientSecret),
    /** a token went out at least once (sendAttempt counts sends that were attempted; lastError null means it arrived) */
    wasSentBefore: ({ context }) => context.everSent,
    tokenMatches: ({ context, event }) => event.type === 'SUBMIT_TOKEN' && sameSecret(event.token, context.token),
    /** this wrong token is the last one the current token takes */
    reachesWrongTokenCap: ({ context }) => context.wrongTokens + 1 >= MAX_WRONG_TOKENS,
    secretMismatch: not('secretMatches'),
    sentTokenMatches: and(['tokenMatches', 'wasSentBefore']),
  },
  actions: {
    accept: assign({ rejection: null }),
    touch: assign({ mtime: ({ event }) => event.now }),
    rememberRequest: assign(({ event }) =>
      event.type === 'REQUEST_TOKEN'
        ? { nextLink: event.nextLink, brand: event.brand, sendTo: event.sendTo, ipAddress: event.ipAddress }
        : {},
    ),
    recordSendAttempt: assign({
      sendAttempt: ({ context, event }) => (event.type === 'REQUEST_TOKEN' ? event.sendAttempt : context.sendAttempt),
    }),
    recordSent: assign({ lastError: null, everSent: true }),
    recordSendFailure: assign({
      rejection: 'sendFailed' as const,
      lastError: ({ event }) => {
        const error = (event as { error?: unknown }).error;
        return error instanceof Error ? error.message : String(error);
      },
    }),
    /** a revived session starts over: the old token and validation no longer count */
    restart: assign({
      everSent: false,
      validatedAt: null,
      mxid: null,
      sendAttempt: -1,
      token: ({ context, event }) => (event.type === 'REQUEST_TOKEN' ? event.freshToken : context.token),
      wrongTokens: 0,
    }),
    /** a locked session gets a new token, never sent yet, that nobody has guessed at */
    renewToken: assign({
      token: ({ context, event }) => (event.type === 'REQUEST_TOKEN' ? event.freshToken : context.token),
      wrongTokens: 0,
      everSent: false,
    }),
    countWrongToken: assign({ wrongTokens: ({ context }) => context.wrongTokens + 1 }),
    rejectSendFailed: assign({ rejection: 'sendFailed' as const }),
    markValidated: assign({
      validatedAt: ({ context, event }) => context.validatedAt ?? event.now,
      mtime: ({ event }) => event.now,
    }),
    recordBinding: assign({ mxid: ({ event }) => (event.type === 'BIND' ? event.mxid : null) }),
    rejectSecret: assign({ rejection: 'secretMismatch' as const }),
    rejectToken: assign({ rejection: 'tokenIncorrect' as const }),
    rejectLocked: assign({ rejection: 'tokenLocked' as const }),
    rejectExpired: assign({ rejection: 'expired' as const }),
    rejectNotValidated: assign({ rejection: 'notValidated' as const }),
  },
});

// Transitions several states share, written once.
const reviveExpired = {
  guard: 'isExpired',
  target: 'sendingToken',
  actions: ['accept', 'restart', 'touch', 'rememberRequest', 'recordSendAttempt'],
} as const;
const resendOnNewerAttempt = {
  guard: 'isNewerSendAttempt',
  target: 'sendingToken',
  actions: ['accept', 'touch', 'rememberRequest', 'recordSendAttempt'],
} as const;
const retryFailedSend = {
  guard: 'isSameOrNewerSendAttempt',
  target: 'sendingToken',
  actions: ['accept', 'touch', 'rememberRequest', 'recordSendAttempt'],
} as const;
/** A wrong token in a state that still awaits the right one: counted, and the last one allowed locks. */
const wrongToken = [
  { guard: 'reachesWrongTokenCap', target: 'locked', actions: ['countWrongToken', 'rejectToken'] },
  { actions: ['countWrongToken', 'rejectToken'] },
] as const;
const resubmit = [
  { guard: 'secretMismatch', actions: 'rejectSecret' },
  { guard: 'isExpired', target: 'expired', actions: 'rejectExpired' },
  { guard: 'tokenMatches', actions: 'accept' },
  { actions: 'rejectToken' },
] as const;
const confirmValidated = [
  { guard: 'secretMismatch', actions: 'rejectSecret' },
  { guard: 'isExpired', target: 'expired', actions: 'rejectExpired' },
  { actions: 'accept' },
] as const;

export const validationSessionMachine = sessionSetup.createMachine({
  id: 'validationSession',
  context: ({ input }) => ({
    ...input,
    wrongTokens: 0,
    everSent: false,
    validatedAt: null,
    mxid: null,
    createdBySydent: false,
    rejection: null,
    lastError: null,
  }),
  initial: 'requested',
  // Checks in Sydent's order: the client secret, then expiry, then the state's own rule.
  on: {
    SUBMIT_TOKEN: [
      { guard: 'secretMismatch', actions: 'rejectSecret' },
      { guard: 'isExpired', target: '.expired', actions: 'rejectExpired' },
      { actions: 'rejectNotValidated' },
    ],
    CHECK_VALIDATED: [
      { guard: 'secretMismatch', actions: 'rejectSecret' },
      { guard: 'isExpired', target: '.expired', actions: 'rejectExpired' },
      { actions: 'rejectNotValidated' },
    ],
    BIND: [
      { guard: 'secretMismatch', actions: 'rejectSecret' },
      { guard: 'isExpired', target: '.expired', actions: 'rejectExpired' },
      { actions: 'rejectNotValidated' },
    ],
  },
  states: {
    requested: {
      on: {
        REQUEST_TOKEN: { target: 'sendingToken', actions: ['accept', 'touch', 'rememberRequest', 'recordSendAttempt'] },
      },
    },
    sendingToken: {
      invoke: {
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
        onDone: { target: 'tokenSent', actions: 'recordSent' },
        onError: { target: 'sendFailed', actions: 'recordSendFailure' },
      },
    },
    tokenSent: {
      on: {
        REQUEST_TOKEN: [
          reviveExpired,
          resendOnNewerAttempt,
          // The same send_attempt again: success, same sid, nothing sent.
          { actions: ['accept', 'touch'] },
        ],
        SUBMIT_TOKEN: [
          { guard: 'secretMismatch', actions: 'rejectSecret' },
          { guard: 'isExpired', target: 'expired', actions: 'rejectExpired' },
          { guard: 'tokenMatches', target: 'validated', actions: ['accept', 'markValidated'] },
          ...wrongToken,
        ],
      },
    },
    sendFailed: {
      on: {
        // A send that failed is not a send: the same send_attempt tries again. Only an older one is refused.
        REQUEST_TOKEN: [
          reviveExpired,
          retryFailedSend,
          { actions: ['touch', 'rejectSendFailed'] },
        ],
        // A token sent by an earlier, successful attempt is still good.
        SUBMIT_TOKEN: [
          { guard: 'secretMismatch', actions: 'rejectSecret' },
          { guard: 'isExpired', target: 'expired', actions: 'rejectExpired' },
          { guard: 'sentTokenMatches', target: 'validated', actions: ['accept', 'markValidated'] },
          ...wrongToken,
        ],
      },
    },
    // Too many wrong tokens: this token no longer validates anything, not even when right. Only a new token,
    // sent by a requestToken with a higher send_attempt, opens the session again.
    locked: {
      on: {
        REQUEST_TOKEN: [
          reviveExpired,
          {
            guard: 'isNewerSendAttempt',
            target: 'sendingToken',
            actions: ['accept', 'touch', 'rememberRequest', 'recordSendAttempt', 'renewToken'],
          },
          { actions: ['accept', 'touch'] },
        ],
        SUBMIT_TOKEN: [
          { guard: 'secretMismatch', actions: 'rejectSecret' },
          { guard: 'isExpired', target: 'expired', actions: 'rejectExpired' },
          { actions: 'rejectLocked' },
        ],
      },
    },
    validated: {
      on: {
        REQUEST_TOKEN: [
          reviveExpired,
          { actions: 'accept' },
        ],
        // Submitting the right token again is harmless and answers success, as in Sydent.
        SUBMIT_TOKEN: resubmit,
        CHECK_VALIDATED: confirmValidated,
        BIND: [
          { guard: 'secretMismatch', actions: 'rejectSecret' },
          { guard: 'isExpired', target: 'expired', actions: 'rejectExpired' },
          { target: 'bound', actions: ['accept', 'recordBinding'] },
        ],
      },
    },
    bound: {
      on: {
        REQUEST_TOKEN: [
          reviveExpired,
          { actions: 'accept' },
        ],
        SUBMIT_TOKEN: resubmit,
        CHECK_VALIDATED: confirmValidated,
        // Binding again (to the same or another user) is allowed while the session lives: the newest binding wins.
        BIND: [
          { guard: 'secretMismatch', actions: 'rejectSecret' },
          { guard: 'isExpired', target: 'expired', actions: 'rejectExpired' },
          { target: 'bound', reenter: true, actions: ['accept', 'recordBinding'] },
        ],
      },
    },
    expired: {
      on: {
        // The same (address, client_secret) asking again revives the session with a fresh token.
        REQUEST_TOKEN: { target: 'sendingToken', actions: ['accept', 'restart', 'touch', 'rememberRequest', 'recordSendAttempt'] },
        SUBMIT_TOKEN: [{ guard: 'secretMismatch', actions: 'rejectSecret' }, { actions: 'rejectExpired' }],
        CHECK_VALIDATED: [{ guard: 'secretMismatch', actions: 'rejectSecret' }, { actions: 'rejectExpired' }],
        BIND: [{ guard: 'secretMismatch', actions: 'rejectSecret' }, { actions: 'rejectExpired' }],
      },
    },
  },
});

export type ValidationSessionMachine = typeof validationSessionMachine;

export const SESSION_STATES = ['requested', 'sendingToken', 'tokenSent', 'sendFailed', 'locked', 'validated', 'bound', 'expired'] as const;
export type SessionState = (typeof SESSION_STATES)[number];
