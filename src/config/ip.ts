import { isIP } from 'node:net';

/**
 * `a.b.c.d/n`, `x::y/n` or a bare address (taken as a single-host range) → canonical `addr/prefix`;
 * null when it is not a range Sydent's netaddr would have taken (zone ids are refused too).
 */
export function parseCidr(item: string): string | null {
  const slash = item.indexOf('/');
  const address = slash < 0 ? item : item.slice(0, slash);
  const family = address.includes('%') ? 0 : isIP(address);
  if (family === 0) return null;
  const maxPrefix = family === 4 ? 32 : 128;
  if (slash < 0) return `${address}/${maxPrefix}`;
  const prefix = item.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > maxPrefix) return null;
  return `${address}/${Number(prefix)}`;
}
