/**
 * What the debug endpoint may show of a session: its shape and progress, never its secrets (token, client
 * secret) nor whose address it is.
 */
import type { SessionContext } from '../machines/validation-session.js';

/** `alice@example.com` → `a…@e…`; `447700900750` → `44…50`: enough to tell sessions apart, not to read. */
export function redactAddress(address: string): string {
  const at = address.indexOf('@');
  if (at > 0) return `${address.slice(0, 1)}…@${address.slice(at + 1, at + 2)}…`;
  return address.length > 4 ? `${address.slice(0, 2)}…${address.slice(-2)}` : '…';
}

export function redactSessionContext(c: SessionContext): Record<string, unknown> {
  return {
    sid: c.sid,
    medium: c.medium,
    address: redactAddress(c.address),
    sendAttempt: c.sendAttempt,
    wrongTokens: c.wrongTokens,
    mtime: c.mtime,
    everSent: c.everSent,
    validatedAt: c.validatedAt,
    // The origin says where the user goes next without the query string, which can carry tokens.
    nextLink: c.nextLink ? safeOrigin(c.nextLink) : null,
    brand: c.brand,
    mxid: c.mxid,
    rejection: c.rejection,
    lastError: c.lastError,
  };
}

function safeOrigin(link: string): string {
  try {
    return new URL(link).origin;
  } catch {
    return '[invalid]';
  }
}
