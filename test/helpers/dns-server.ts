/**
 * A tiny authoritative DNS server over UDP on 127.0.0.1, so discovery can be tested without the real DNS:
 *
 *   const dns = await startDnsServer({
 *     A: { 'hs.test': ['127.0.0.1'] },
 *     SRV: { '_matrix-fed._tcp.example.test': [{ priority: 10, weight: 5, port: 8448, target: 'hs.test' }] },
 *   });
 *   new DnsResolver({ servers: [dns.address] });   // or `[http] federation.dns_servers = ${dns.address}`
 *
 * Names are matched case-insensitively, without a trailing dot. A name known under another type answers with no
 * records (NODATA); an unknown name answers NXDOMAIN. `records` may be changed while the server runs; `queries`
 * lists what was asked, in order.
 */
import dgram from 'node:dgram';
import dnsPacket from 'dns-packet';

export interface SrvTarget {
  priority: number;
  weight: number;
  port: number;
  /** a host name, or "." for "service not available" */
  target: string;
}

export interface DnsRecords {
  A?: Record<string, string[]>;
  AAAA?: Record<string, string[]>;
  SRV?: Record<string, SrvTarget[]>;
}

export interface DnsServer {
  /** `127.0.0.1:<port>`, the form dns.Resolver#setServers and federation.dns_servers take */
  address: string;
  port: number;
  records: DnsRecords;
  queries: { name: string; type: string }[];
  close(): Promise<void>;
}

const NXDOMAIN = 3;
const TTL = 60;

const norm = (name: string) => name.toLowerCase().replace(/\.$/, '');

function lookup<T>(table: Record<string, T[]> | undefined, name: string): T[] | undefined {
  if (!table) return undefined;
  for (const [key, value] of Object.entries(table)) if (norm(key) === name) return value;
  return undefined;
}

function knownName(records: DnsRecords, name: string): boolean {
  return [records.A, records.AAAA, records.SRV].some((table) =>
    lookup(table as Record<string, unknown[]> | undefined, name),
  );
}

function answersFor(records: DnsRecords, question: dnsPacket.Question): dnsPacket.Answer[] {
  const name = norm(question.name);
  switch (question.type) {
    case 'A':
    case 'AAAA':
      return (lookup(records[question.type], name) ?? []).map((data) => ({
        type: question.type as 'A' | 'AAAA',
        name: question.name,
        ttl: TTL,
        data,
      }));
    case 'SRV':
      return (lookup(records.SRV, name) ?? []).map((r) => ({
        type: 'SRV' as const,
        name: question.name,
        ttl: TTL,
        data: { priority: r.priority, weight: r.weight, port: r.port, target: r.target },
      }));
    default:
      return [];
  }
}

export async function startDnsServer(records: DnsRecords): Promise<DnsServer> {
  const socket = dgram.createSocket('udp4');
  const queries: { name: string; type: string }[] = [];
  const server: DnsServer = {
    address: '',
    port: 0,
    records,
    queries,
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
  socket.on('message', (msg, rinfo) => {
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const questions = query.questions ?? [];
    let answers: dnsPacket.Answer[] = [];
    let known = true;
    for (const q of questions) {
      queries.push({ name: norm(q.name), type: q.type });
      answers = answers.concat(answersFor(server.records, q));
      known &&= knownName(server.records, norm(q.name));
    }
    const response = dnsPacket.encode({
      type: 'response',
      id: query.id ?? 0,
      flags:
        dnsPacket.AUTHORITATIVE_ANSWER | ((query.flags ?? 0) & dnsPacket.RECURSION_DESIRED) | (known ? 0 : NXDOMAIN),
      questions,
      answers,
    });
    socket.send(response, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  server.port = socket.address().port;
  server.address = `127.0.0.1:${server.port}`;
  return server;
}
