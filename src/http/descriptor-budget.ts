/**
 * The connection caps must fit the process's file-descriptor limit: every connection is a descriptor, and so are the
 * database and its journal, the log, the SMTP and outbound HTTP connections. Were the caps above the limit, the
 * kernel would refuse descriptors first, and then to everything at once: the internal listener, the database, the
 * mail. Node raises its soft limit to the hard one at start, so the limit read here is what the process has.
 */
import fs from 'node:fs';

/** Descriptors kept for everything but inbound connections (database, log, SMTP, outbound HTTP, Node's own). */
export const DESCRIPTORS_KEPT = 128;
/** Below this many client connections the server would not be worth starting: the limit must be raised. */
export const MIN_CLIENT_CONNECTIONS = 32;

interface ListenerCaps {
  client: number;
  clientPerAddress: number;
  /** the other listeners' caps, by name (only those that run) */
  others: Record<string, number>;
}

interface FittedCaps extends ListenerCaps {
  /** set when the client caps were lowered to fit: what they were */
  lowered: { client: number; clientPerAddress: number } | null;
}

/**
 * The caps as configured, or, when they do not fit under `limit` with DESCRIPTORS_KEPT to spare, the client
 * listener's lowered to what fits (the other listeners keep their small budgets: they are what must still answer).
 * Null when even MIN_CLIENT_CONNECTIONS do not fit.
 */
export function fitCaps(caps: ListenerCaps, limit: number | null): FittedCaps | null {
  if (limit === null) return { ...caps, lowered: null };
  const others = Object.values(caps.others).reduce((sum, n) => sum + n, 0);
  const room = limit - DESCRIPTORS_KEPT - others;
  if (caps.client <= room) return { ...caps, lowered: null };
  if (room < MIN_CLIENT_CONNECTIONS) return null;
  return {
    ...caps,
    client: room,
    clientPerAddress: Math.min(caps.clientPerAddress, room),
    lowered: { client: caps.client, clientPerAddress: caps.clientPerAddress },
  };
}

/** The soft limit on open files (`ulimit -n`) from /proc (Linux); null where it cannot be read or is unlimited. */
export function openFileLimit(limitsFile = '/proc/self/limits'): number | null {
  let text: string;
  try {
    text = fs.readFileSync(limitsFile, 'utf8');
  } catch {
    return null;
  }
  const soft = /^Max open files\s+(\S+)/m.exec(text)?.[1];
  return soft !== undefined && /^\d+$/.test(soft) ? Number(soft) : null;
}
