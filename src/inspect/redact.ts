/**
 * Inspection events leave the process: everything secret or personal is taken out first. Keys are matched by
 * name at any depth, so a new field with a known name is covered without touching this file.
 */
const SECRET_KEYS = new Set([
  'token',
  'freshtoken',
  'clientsecret',
  'client_secret',
  'access_token',
  'accesstoken',
  'openidtoken',
  'private_key',
  'privatekey',
  'seed',
  'signingkey',
  'password',
  'smtppassword',
  'auth_token',
  'authtoken',
  'address',
  'sendto',
  'email',
  'phone_number',
  'msisdn',
  'ipaddress',
  // who asked (a client address or user ID), the key of a rate limit
  'requester',
  'key',
  'nextlink',
  'next_link',
  'raw',
  'body',
  'to',
  'text',
  // a session write carries a JSON copy of the whole session context
  'write',
  'signatures',
  // a binding as stored: the signed association (its address inside) and the address's lookup hash
  'sgassoc',
  'sgassocs',
  'lookuphash',
  'sig',
  'authorization',
]);

/** Objects that are resources, not data (the root actor's deps: config, database, logger...). */
const DROP_KEYS = new Set(['deps', 'config', 'db', 'log', 'replyto', 'identity', 'metrics', '_nodes', 'machine']);

const MAX_DEPTH = 8;

export function redactForInspection(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object') return typeof value === 'function' ? undefined : value;
  if (depth > MAX_DEPTH) return '[…]';
  if (Array.isArray(value)) return value.map((v) => redactForInspection(v, depth + 1));
  if (value instanceof Uint8Array) return '[bytes]';
  if (value instanceof Error) return { name: value.name, message: value.message };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const name = k.toLowerCase();
    if (DROP_KEYS.has(name)) continue;
    if (SECRET_KEYS.has(name)) {
      if (v !== null && v !== undefined) out[k] = '[redacted]';
      continue;
    }
    out[k] = redactForInspection(v, depth + 1);
  }
  return out;
}
