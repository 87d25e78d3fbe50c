/**
 * How many connections a listener holds at once: in total, and per client address. Each connection costs a file
 * descriptor and memory for as long as it is open, so clients that open many and send slowly (or nothing) would,
 * unbounded, take every descriptor of the process, and every listener, the internal one included, would stop
 * accepting. A connection over a cap is closed as soon as it is accepted.
 *
 * Near the total, the last connections (the reserve) go only to addresses that hold few: one address, or a few, at
 * their per-address cap cannot fill the listener, and a new client (a monitor asking `/versions`, a user) still gets
 * in while they try.
 */
import type { Server, Socket } from 'node:net';
import ipaddr from 'ipaddr.js';
import type { Logger } from '../log.js';

export interface ConnectionLimits {
  /** the listener's name in log lines (`client`, `internal`, …) */
  listener: string;
  /** connections held at once, every address together */
  max: number;
  /** the config key of `max`, named in the log line when it is reached */
  maxKey?: string;
  /** connections held at once by one client address (IPv6: one /64); 0: no cap */
  perAddress?: number;
  perAddressKey?: string;
  /**
   * Addresses the per-address cap does not apply to: the reverse proxies whose X-Forwarded-For is believed, which
   * carry every client's connections (the proxy limits its clients itself).
   */
  exempt?: (address: string) => boolean;
}

/** The share of `max` kept for addresses holding few connections. */
const RESERVE_SHARE = 0.1;
/** Within the reserve, an address may hold this many. */
const RESERVE_PER_ADDRESS = 4;
/** After a line saying a cap was reached, the next says how many more were refused, at most this often. */
const LOG_EVERY_MS = 10_000;

type Refusal = 'total' | 'per-address' | 'reserve';

/** What the log says of each cap. */
const REFUSAL_LINES: Record<Refusal, string> = {
  total: 'connection refused: the listener holds its maximum of connections',
  'per-address': 'connection refused: the client address holds its maximum of connections',
  reserve: 'connection refused: the listener is nearly full, its last connections are kept for other addresses',
};

/**
 * Admits or refuses every connection of one listener. Attached to each of its servers (fastify makes two for
 * `localhost`); they share the counts.
 */
export class ConnectionGate {
  private total = 0;
  private readonly byAddress = new Map<string, number>();
  private readonly perAddress: number;
  private readonly reserveFrom: number;
  private readonly log: RefusalLog;

  constructor(
    private readonly limits: ConnectionLimits,
    log: Logger,
  ) {
    this.perAddress = limits.perAddress ?? 0;
    // Only where a per-address cap exists: it is what the reserve keeps crowds of one address out of.
    this.reserveFrom = this.perAddress > 0 ? limits.max - Math.floor(limits.max * RESERVE_SHARE) : limits.max;
    this.log = new RefusalLog(limits, log);
  }

  /** connections held now */
  get held(): number {
    return this.total;
  }

  attach(server: Server): void {
    // Before the HTTP server's own listener: a refused socket is destroyed before any parser is set up for it.
    server.prependListener('connection', (socket: Socket) => this.admit(socket));
  }

  private admit(socket: Socket): void {
    const address = socket.remoteAddress ?? '';
    const key = addressKey(address);
    const held = this.byAddress.get(key) ?? 0;
    const refusal = this.refusal(address, held);
    if (refusal) {
      this.log.refused(refusal, address);
      socket.destroy();
      return;
    }
    this.total++;
    this.byAddress.set(key, held + 1);
    socket.once('close', () => {
      this.total--;
      const left = (this.byAddress.get(key) ?? 1) - 1;
      if (left > 0) this.byAddress.set(key, left);
      else this.byAddress.delete(key);
    });
  }

  private refusal(address: string, held: number): Refusal | null {
    if (this.total >= this.limits.max) return 'total';
    if (this.perAddress === 0 || this.limits.exempt?.(address)) return null;
    if (held >= this.perAddress) return 'per-address';
    if (this.total >= this.reserveFrom && held >= RESERVE_PER_ADDRESS) return 'reserve';
    return null;
  }
}

/**
 * For each cap, one line when it is first reached, then at most one every LOG_EVERY_MS saying how many more were
 * refused, for as long as refusals go on: an attack is visible in the log without flooding it.
 */
class RefusalLog {
  /** the caps reached within their last LOG_EVERY_MS: refusals since their last line, and the first one's address */
  private readonly open = new Map<Refusal, { count: number; address: string }>();

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly log: Logger,
  ) {}

  refused(refusal: Refusal, address: string): void {
    const since = this.open.get(refusal);
    if (since) {
      if (since.count++ === 0) since.address = address;
      return;
    }
    this.line(refusal, address, 1);
    this.open.set(refusal, { count: 0, address });
    this.later(refusal);
  }

  private later(refusal: Refusal): void {
    setTimeout(() => {
      const since = this.open.get(refusal);
      if (!since || since.count === 0) {
        this.open.delete(refusal);
        return;
      }
      this.line(refusal, since.address, since.count);
      since.count = 0;
      this.later(refusal);
    }, LOG_EVERY_MS).unref();
  }

  private line(refusal: Refusal, address: string, refused: number): void {
    const { listener, max, maxKey, perAddress, perAddressKey } = this.limits;
    const cap =
      refusal === 'per-address'
        ? { limit: perAddress, ...(perAddressKey ? { key: perAddressKey } : {}) }
        : { limit: max, ...(maxKey ? { key: maxKey } : {}) };
    // The first address refused: which client it is, for the operator to look at (request lines show addresses too).
    this.log.warn({ listener, ...cap, refused, address }, REFUSAL_LINES[refusal]);
  }
}

/**
 * What the per-address cap counts by: an IPv4 address (an IPv4-mapped IPv6 one as IPv4), or the /64 of an IPv6
 * address, since one host is given a whole /64 and may use any address in it.
 */
export function addressKey(address: string): string {
  if (!ipaddr.isValid(address)) return address;
  const parsed = ipaddr.parse(address);
  if (parsed.kind() === 'ipv4') return parsed.toString();
  const v6 = parsed as ipaddr.IPv6;
  if (v6.isIPv4MappedAddress()) return v6.toIPv4Address().toString();
  return `${v6.parts
    .slice(0, 4)
    .map((part) => part.toString(16))
    .join(':')}::/64`;
}
