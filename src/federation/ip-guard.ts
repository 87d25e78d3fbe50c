/**
 * The outbound address filter (Sydent's blacklisting reactor, sydent/util/ip_range.py). Server names come from
 * untrusted requests, so without it `/account/register` could make us fetch from our own network.
 */
import { BlockList, isIP, isIPv4 } from 'node:net';
import { DEFAULT_IP_RANGE_BLACKLIST } from '../config/defaults.js';

export { DEFAULT_IP_RANGE_BLACKLIST };

// Connecting to 0.0.0.0 or :: reaches the local host on Linux. Sydent's config comment promised these were always
// blocked but its code never added them; we do, so a custom blacklist cannot forget them.
const ALWAYS_BLOCKED: readonly string[] = ['0.0.0.0/8', '::/128'];

export interface IpGuardOptions {
  /** `addr/prefix` ranges (already validated by the config loader) */
  blacklist: readonly string[];
  whitelist?: readonly string[];
}

export class IpGuard {
  private readonly blocked: BlockList;
  private readonly allowed: BlockList;

  constructor(opts: IpGuardOptions) {
    this.blocked = buildList([...ALWAYS_BLOCKED, ...opts.blacklist]);
    this.allowed = buildList(opts.whitelist ?? []);
  }

  /** false for a blacklisted address that the whitelist does not re-allow, and for anything that is not an IP */
  isAllowed(ip: string): boolean {
    const address = normalise(ip);
    const family = isIP(address);
    if (family === 0) return false;
    const type = family === 4 ? 'ipv4' : 'ipv6';
    return !this.blocked.check(address, type) || this.allowed.check(address, type);
  }
}

/** strips `[...]` and an IPv6 zone id (`fe80::1%eth0`), which BlockList does not understand */
function normalise(ip: string): string {
  let address = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  const zone = address.indexOf('%');
  if (zone >= 0) address = address.slice(0, zone);
  return address;
}

/**
 * The ranges in a BlockList. An IPv6 address is checked by BlockList itself (inet_pton), not by `net.isIP`: the
 * first isIP of an IPv6 address compiles Node's large IPv6 regular expression, which took tens of milliseconds of
 * start-up.
 */
function buildList(ranges: readonly string[]): BlockList {
  const list = new BlockList();
  for (const range of ranges) {
    const slash = range.indexOf('/');
    const address = slash < 0 ? range : range.slice(0, slash);
    const ipv4 = isIPv4(address);
    if (!ipv4 && !address.includes(':')) throw new Error(`Invalid IP range provided: ${range}`);
    const max = ipv4 ? 32 : 128;
    const prefix = slash < 0 ? max : Number(range.slice(slash + 1));
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new Error(`Invalid IP range provided: ${range}`);
    if (ipv4) {
      list.addSubnet(address, prefix, 'ipv4');
      // The same IPv4 hosts are reachable through IPv6 forms (as in Sydent's generate_ip_set): mapped
      // (::ffff:a.b.c.d), compatible (::a.b.c.d) and 6to4 (2002:aabb:ccdd::).
      list.addSubnet(`::ffff:${address}`, 96 + prefix, 'ipv6');
      list.addSubnet(`::${address}`, 96 + prefix, 'ipv6');
      list.addSubnet(sixToFour(address), 16 + prefix, 'ipv6');
    } else {
      try {
        list.addSubnet(address, prefix, 'ipv6');
      } catch {
        throw new Error(`Invalid IP range provided: ${range}`);
      }
    }
  }
  return list;
}

function sixToFour(ipv4: string): string {
  const [a = 0, b = 0, c = 0, d = 0] = ipv4.split('.').map(Number);
  const hex = (hi: number, lo: number) => ((hi << 8) | lo).toString(16);
  return `2002:${hex(a, b)}:${hex(c, d)}::`;
}
