import fs from 'node:fs';
import path from 'node:path';
import { makeCa, makeCert, type Pem } from './certs.js';
import { startDnsServer, type DnsServer } from './dns-server.js';
import { startHomeserver, type Homeserver, type RouteHandler } from './homeserver.js';
import { tempDir } from './tmp.js';

/**
 * A homeserver world on loopback: a DNS server that knows `hs.test`, a test CA, and an HTTPS homeserver for
 * `hs.test` with a certificate from that CA. `conf` is the sydent.conf values that make sydent-ts use them.
 */
export interface FederationEnv {
  ca: Pem;
  dns: DnsServer;
  hs: Homeserver;
  /** `hs.test:<port>`: the homeserver's server name */
  serverName: string;
  caFile: string;
  conf: Record<string, Record<string, string>>;
  close(): Promise<void>;
}

export async function startFederationEnv(routes: Record<string, RouteHandler>): Promise<FederationEnv> {
  const ca = await makeCa();
  const leaf = await makeCert(ca, { hostnames: ['hs.test'] });
  const dns = await startDnsServer({ A: { 'hs.test': ['127.0.0.1'] } });
  const hs = await startHomeserver({ tls: leaf, routes });
  const tmp = tempDir('sydent-ts-ca-');
  const caFile = path.join(tmp.dir, 'ca.pem');
  fs.writeFileSync(caFile, ca.cert);
  return {
    ca,
    dns,
    hs,
    serverName: `hs.test:${hs.port}`,
    caFile,
    conf: {
      general: { 'ip.whitelist': '127.0.0.0/8' },
      http: { 'federation.dns_servers': dns.address, 'federation.cacert': caFile },
    },
    close: async () => {
      await hs.close();
      await dns.close();
      tmp.cleanup();
    },
  };
}

/** Merges sydent.conf value maps section by section (later wins). */
export function mergeConf(...parts: Record<string, Record<string, string>>[]): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const part of parts) for (const [s, v] of Object.entries(part)) out[s] = { ...out[s], ...v };
  return out;
}
