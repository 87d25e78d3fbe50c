/**
 * Matrix server names (spec appendix "Server Name"): `hostname [ ":" port ]`, the hostname being a DNS name, a
 * dotted-quad IPv4 literal or a bracketed IPv6 literal. Server names are attacker-controlled input (register's
 * `matrix_server_name`, the server part of an mxid), so everything outside the grammar is refused here, before
 * any DNS or network work.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface ParsedServerName {
  /** the DNS name or IP address, without IPv6 brackets */
  host: string;
  /** the explicit port, or null when none was given */
  port: number | null;
  ipLiteral: boolean;
}

const DNS_NAME = /^[A-Za-z0-9.-]{1,255}$/;
const DOTTED_DIGITS = /^\d+\.\d+\.\d+\.\d+$/;
const IPV6_CHARS = /^[0-9A-Fa-f:.]{2,45}$/;
// 1-5 digits without a leading zero: "08448" would otherwise be read as 8448 by some parsers and not others
const PORT = /^[1-9]\d{0,4}$/;

/** null when `name` is not a valid server name */
export function parseServerName(name: string): ParsedServerName | null {
  if (typeof name !== 'string' || name === '') return null;
  let hostPart: string;
  let portPart: string | undefined;
  if (name.startsWith('[')) {
    const close = name.indexOf(']');
    if (close < 0) return null;
    hostPart = name.slice(0, close + 1);
    const rest = name.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return null;
      portPart = rest.slice(1);
    }
  } else {
    // an unbracketed IPv6 address has several colons and is refused here: only one ":" can precede a port
    const parts = name.split(':');
    if (parts.length > 2) return null;
    hostPart = parts[0] ?? '';
    portPart = parts[1];
  }

  let port: number | null = null;
  if (portPart !== undefined) {
    if (!PORT.test(portPart)) return null;
    port = Number(portPart);
    if (port > 65535) return null;
  }

  if (hostPart.startsWith('[')) {
    const ip = hostPart.slice(1, -1);
    if (!IPV6_CHARS.test(ip) || !isIPv6(ip)) return null;
    return { host: ip, port, ipLiteral: true };
  }
  if (!DNS_NAME.test(hostPart)) return null;
  // "999.1.1.1" fits the dns-name rule, but four numeric labels are meant as an IPv4 literal and must be one
  if (DOTTED_DIGITS.test(hostPart)) {
    return isIPv4(hostPart) ? { host: hostPart, port, ipLiteral: true } : null;
  }
  return { host: hostPart, port, ipLiteral: false };
}

export function isValidServerName(name: string): boolean {
  return parseServerName(name) !== null;
}

/** `host` as it must appear in a URL or Host header: IPv6 addresses bracketed */
export function hostForUrl(host: string): string {
  return isIPv6(host) ? `[${host}]` : host;
}
