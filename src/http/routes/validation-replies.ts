/**
 * Session outcomes as HTTP answers, shared by the email and msisdn endpoints and getValidated3pid: the
 * machine says what happened, this says how the spec wants a client to hear it.
 */
import type { SessionEvent } from '../../machines/validation-session.js';
import type { SessionOutcome } from '../../sessions/host.js';
import type { AppContext } from '../context.js';
import type { CallOptions } from '../../actors/ask.js';
import { errors, MatrixError } from '../errors.js';
import { sidNumber } from '../validate.js';

const noSession = () =>
  new MatrixError(404, 'M_NO_VALID_SESSION', 'No valid session was found matching that sid and client secret');
/** A token that is not the session's; the body keeps `success: false` for clients older than v1.18. */
export const tokenIncorrect = () =>
  new MatrixError(400, 'M_TOKEN_INCORRECT', 'The token is incorrect', { success: false });
const expired = (extra: Record<string, unknown> = {}) =>
  new MatrixError(400, 'M_SESSION_EXPIRED', 'This validation session has expired: call requestToken again', extra);

/** POST submitToken: `{success: true}` or a v1.18 error that still carries `success: false` for old clients. */
export function submitTokenReply(outcome: SessionOutcome | undefined): { success: true } {
  const failed = { success: false };
  if (!outcome) throw new MatrixError(400, 'M_INVALID_PARAM', 'No session was found with that sid', failed);
  switch (outcome.rejection) {
    case null:
      if (outcome.state === 'validated' || outcome.state === 'bound') return { success: true };
      break;
    case 'secretMismatch':
      throw new MatrixError(
        400,
        'M_INVALID_PARAM',
        'Client secret does not match the one given when requesting the token',
        failed,
      );
    case 'expired':
      throw expired(failed);
    case 'tokenLocked':
      // The spec's answer for a token that does not validate; waiting would not help, so not 429.
      throw new MatrixError(
        400,
        'M_TOKEN_INCORRECT',
        'Too many incorrect tokens: this token no longer works, request a new one (with a higher send_attempt)',
        failed,
      );
    default:
      break;
  }
  throw tokenIncorrect();
}

/** getValidated3pid and bind: a wrong secret looks like no session at all, so sessions do not leak. */
export function validatedSessionReply(outcome: SessionOutcome | undefined): SessionOutcome {
  if (!outcome || outcome.rejection === 'secretMismatch') throw noSession();
  if (outcome.rejection === 'expired') throw expired();
  if (outcome.rejection !== null || (outcome.state !== 'validated' && outcome.state !== 'bound')) {
    throw new MatrixError(400, 'M_SESSION_NOT_VALIDATED', 'This validation session has not yet been completed');
  }
  return outcome;
}

/**
 * A submitToken for the session a request names, counted against the client's address (`requester`); throws 429
 * M_LIMIT_EXCEEDED when that address has submitted too many wrong tokens. `undefined` when the sid names none.
 */
export async function submitTokenEvent(
  ctx: AppContext,
  rawSid: string | number,
  requester: string,
  event: SessionEvent,
  request: CallOptions,
): Promise<SessionOutcome | undefined> {
  const sid = sidNumber(rawSid);
  if (sid === null) return undefined;
  const result = await ctx.facades.sessions.submitToken({ sid, event, requester }, request);
  if (result.limited) throw errors.limitExceeded('Too many incorrect tokens from this address', result.retryAfterMs);
  return result.outcome;
}

/** An event for the session a request names; `undefined` when the sid cannot name one. */
export async function sessionEvent(
  ctx: AppContext,
  rawSid: string | number,
  event: SessionEvent,
  request: CallOptions,
): Promise<SessionOutcome | undefined> {
  const sid = sidNumber(rawSid);
  return sid === null ? undefined : ctx.facades.sessions.event({ sid, event }, request);
}
