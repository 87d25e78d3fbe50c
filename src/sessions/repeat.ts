/**
 * A requestToken that repeats one its session already took, answered from the session's rows as the machine last
 * wrote them, without the sessions supervisor or the machine: only when the machine, given the event, would
 * neither move nor write (the same answer, nothing recorded, nothing sent). Anything else (a send due, a touch due,
 * a rejection to clear, an expired session, a row Sydent changed since, an older machine version) is left to the
 * machine, which stays the only thing that changes a session.
 *
 * Which events the machine takes without a change is read from its definition (machines/validation-session.ts):
 * every live state checks the secret, then expiry; then `tokenSent` and `locked` send again only for a newer
 * send_attempt and otherwise `accept` and `touchIfStale`; `validated` and `bound` only `accept`. `accept` clears a
 * rejection and `touchIfStale` moves an mtime older than REPEAT_TOUCH_EVERY_MS, so both are no change only when
 * there is nothing to clear or move. test/session-repeat.test.ts holds this to the machine, state by state.
 */
import {
  REPEAT_TOUCH_EVERY_MS,
  SESSION_LIFETIME_MS,
  SESSION_MACHINE_VERSION,
  sameSecret,
  validationSessionMachine,
  type Medium,
  type SessionContext,
} from '../machines/validation-session.js';
import { encodeStateValue, stateNames, valueOfPath } from '../machines/state-value.js';
import type { StoredSession } from '../store/sessions.js';
import { sessionOutcome, type SessionOutcome } from './host.js';

/** A requestToken as the fast path needs it. */
export interface RepeatRequest {
  medium: Medium;
  /** canonical, as the session is looked up by */
  address: string;
  clientSecret: string;
  sendAttempt: number;
}

/** The states in which a repeat can change nothing, by the `state` column the machine writes for each. */
const QUIET_STATES = new Map(
  (['tokenSent', 'locked', 'validated', 'bound'] as const).map((name) => {
    const path = stateNames(validationSessionMachine).pathOfName(name);
    if (!path) throw new Error(`validationSession has no state ${name}`);
    return [encodeStateValue(valueOfPath(path)), name];
  }),
);

/**
 * The machine's answer to `request` for the stored session, when that answer changes nothing; undefined when the
 * machine must take the event.
 */
export function repeatOutcome(stored: StoredSession, request: RepeatRequest, now: number): SessionOutcome | undefined {
  const { sydent, machine } = stored;
  if (!machine || machine.machine_version !== SESSION_MACHINE_VERSION) return undefined;
  const state = QUIET_STATES.get(machine.state);
  if (state === undefined) return undefined;
  const context = JSON.parse(machine.context) as SessionContext;
  // The rows as the machine's last save left them: a restore would reconcile nothing.
  if (
    sydent.medium !== context.medium ||
    sydent.clientSecret !== context.clientSecret ||
    sydent.token !== context.token ||
    sydent.sendAttemptNumber !== context.sendAttempt ||
    sydent.mtime !== context.mtime ||
    (sydent.validated !== 0) !== (context.validatedAt !== null)
  )
    return undefined;
  if (context.medium !== request.medium || !sameSecret(request.clientSecret, context.clientSecret)) return undefined;
  if (context.rejection !== null || now > context.mtime + SESSION_LIFETIME_MS) return undefined;
  if (state === 'tokenSent' || state === 'locked') {
    if (request.sendAttempt > context.sendAttempt || now - context.mtime >= REPEAT_TOUCH_EVERY_MS) return undefined;
  }
  return sessionOutcome(context, state, null, sydent.address);
}

/** The session `request` repeats, when the fast path can answer it (see `repeatOutcome`). */
export async function answerRepeat(
  reads: { findLatest(medium: string, address: string, clientSecret: string): Promise<StoredSession | undefined> },
  request: RepeatRequest,
  now: number,
): Promise<SessionOutcome | undefined> {
  const stored = await reads.findLatest(request.medium, request.address, request.clientSecret);
  return stored && repeatOutcome(stored, request, now);
}
