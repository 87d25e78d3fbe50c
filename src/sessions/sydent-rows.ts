/**
 * A session as Sydent's rows describe it. An operator may switch back to Sydent and forward again: while Sydent
 * was in charge it validated sessions, moved their mtime, mailed tokens and counted send attempts in its own
 * columns, and knew nothing of our `session_machines` row. When a session is loaded, Sydent's columns win
 * wherever they are newer or say more than our row.
 */
import type { Medium, SessionContext } from '../machines/validation-session.js';
import type { SydentSessionRow } from '../store/sessions.js';
import { normaliseAddress } from '../matrix/index.js';

export interface LoadedSession {
  state: string;
  context: SessionContext;
}

/** A session only Sydent knows: its rows are all there is. */
export function sessionFromSydentRow(row: SydentSessionRow): LoadedSession {
  return {
    state: row.validated ? 'validated' : 'tokenSent',
    context: {
      sid: String(row.id),
      medium: row.medium as Medium,
      // Sydent kept the address as typed; ours are canonical (casefolded), as lookups and bindings need.
      address: normaliseAddress(row.medium, row.address),
      sendTo: row.address,
      clientSecret: row.clientSecret,
      token: row.token ?? '',
      wrongTokens: 0,
      sendAttempt: row.sendAttemptNumber ?? -1,
      mtime: row.mtime,
      everSent: true,
      // Sydent's validated_at is the session's mtime
      validatedAt: row.validated ? row.mtime : null,
      nextLink: null,
      brand: null,
      ipAddress: null,
      mxid: null,
      createdBySydent: true,
      rejection: null,
      lastError: null,
    },
  };
}

/**
 * Our row's session with what Sydent did to it since: a validation, a later mtime (a requestToken, which also
 * mails the token), a token of its own, a higher send attempt. A row that now belongs to another session (Sydent
 * purged ours and its random sid came up again) is taken as Sydent's.
 */
export function reconcileWithSydent(ours: LoadedSession, row: SydentSessionRow): LoadedSession {
  const { context } = ours;
  if (row.medium !== context.medium || row.clientSecret !== context.clientSecret) return sessionFromSydentRow(row);

  let state = ours.state;
  const next: SessionContext = { ...context };
  if (row.token !== null && row.token !== context.token) {
    // a token of Sydent's, that nobody has guessed at here: a lock on ours does not hold it
    next.token = row.token;
    next.everSent = true;
    next.wrongTokens = 0;
    if (state === 'locked') state = 'tokenSent';
  }
  if (row.sendAttemptNumber !== null && row.sendAttemptNumber > context.sendAttempt)
    next.sendAttempt = row.sendAttemptNumber;
  if (row.mtime > context.mtime) {
    next.mtime = row.mtime;
    next.everSent = true;
    // Sydent revives an expired session as it was, token and validation included.
    if (state === 'expired')
      state = next.validatedAt === null ? 'tokenSent' : next.mxid === null ? 'validated' : 'bound';
  }
  if (row.validated && context.validatedAt === null) {
    state = 'validated';
    next.validatedAt = next.mtime;
    next.everSent = true;
  }
  if (state !== ours.state) next.rejection = null;
  return { state, context: next };
}
