/**
 * Replicating sydent-ts instances on loopback, for the replication tests.
 *
 *   const ca = await makeCa();
 *   const mesh = await startMesh(ca, ['a.test', 'b.test', 'c.test']);   // all peers of each other
 *   await bind(mesh.a, 'alice@example.org', '@alice:hs.test');
 *   await waitFor(() => lookup(mesh.b, 'alice@example.org'), (m) => m === '@alice:hs.test');
 *
 * Each instance has its own certificate (CN = its server.name, SANs for its name, localhost and 127.0.0.1,
 * usable as server and client certificate, key and certificate in one PEM file as Sydent wants), all signed by
 * one CA that every instance trusts (`replication.https.cacert`). Peers are added with the `peers` command's
 * function, as an operator would.
 */
import type { SydentConfig } from '../../src/config/types.js';
import fs from 'node:fs';
import type { IncomingMessage, RequestListener } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { generate } from 'selfsigned';
import { vi } from 'vitest';
import { systemClock, type Clock } from '../../src/clock.js';
import { peersMain } from '../../src/replication/cli.js';
import type { Pem } from './certs.js';
import { freePort } from './process.js';
import { startTestServer, type TestServer } from './server.js';
import { tempDir } from './tmp.js';

/** A certificate for a replicating server: server and client use, CN = `name`. */
export async function makePeerCert(ca: Pem, name: string, opts: { clientAuth?: boolean } = {}): Promise<Pem> {
  const now = Date.now();
  const pems = await generate([{ name: 'commonName', value: name }], {
    keyType: 'ec',
    algorithm: 'sha256',
    notBeforeDate: new Date(now - 3600_000),
    notAfterDate: new Date(now + 365 * 24 * 3600_000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true, clientAuth: opts.clientAuth ?? true },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2 as const, value: name },
          { type: 2 as const, value: 'localhost' },
          { type: 7 as const, ip: '127.0.0.1' },
        ],
      },
    ],
    ca: { key: ca.key, cert: ca.cert },
  });
  return { key: pems.private, cert: pems.cert };
}

/** Writes Sydent's combined PEM (key then certificate) and the CA file; returns their paths. */
export function writeCertFiles(dir: string, cert: Pem, ca: Pem): { certfile: string; cacert: string } {
  const certfile = path.join(dir, 'replication.pem');
  const cacert = path.join(dir, 'ca.pem');
  fs.writeFileSync(certfile, `${cert.key.trim()}\n${cert.cert.trim()}\n`);
  fs.writeFileSync(cacert, ca.cert);
  return { certfile, cacert };
}

export interface Replica {
  name: string;
  /** the replication listener's port (fixed, so a restart keeps it) */
  port: number;
  dir: string;
  cert: Pem;
  server: TestServer;
  /** stops it, keeping its files */
  stop(): Promise<void>;
  /** starts it again on the same files and port */
  restart(): Promise<void>;
}

export interface Mesh {
  replicas: Replica[];
  byName(name: string): Replica;
  close(): Promise<void>;
}

/**
 * Starts one instance per name, each with a replication listener on a fixed free loopback port and a
 * `[peer.X] base_replication_url` for every other one. With `connect` (default), every instance is then made a
 * peer of every other with `sydent-ts peers add`.
 */
/** Replicas expose their metrics (on a free loopback port), so tests can read the replication gauges. */
function withMetrics(config: SydentConfig): void {
  config.general.prometheusPort = 0;
  config.general.prometheusAddr = '127.0.0.1';
}

export async function startMesh(
  ca: Pem,
  names: string[],
  opts: { connect?: boolean; clock?: Clock } = {},
): Promise<Mesh> {
  // One time for all: a binding is valid from its `not_before`, so servers whose clocks disagree (separate
  // ManualClocks) would not see each other's newest bindings.
  const clock = opts.clock ?? systemClock;
  const ports = new Map<string, number>();
  for (const name of names) ports.set(name, await freePort());
  const dirs: Array<() => void> = [];
  const replicas: Replica[] = [];
  for (const name of names) {
    const tmp = tempDir('sydent-ts-repl-');
    dirs.push(tmp.cleanup);
    const cert = await makePeerCert(ca, name);
    const files = writeCertFiles(tmp.dir, cert, ca);
    const port = ports.get(name)!;
    const conf: Record<string, Record<string, string>> = {
      general: { 'server.name': name },
      http: {
        'replication.https.certfile': files.certfile,
        'replication.https.cacert': files.cacert,
        'replication.https.bind_address': '127.0.0.1',
        'replication.https.port': String(port),
      },
    };
    for (const other of names) {
      if (other !== name) conf[`peer.${other}`] = { base_replication_url: `https://127.0.0.1:${ports.get(other)}` };
    }
    const server = await startTestServer({ conf, dir: tmp.dir, clock, adjust: withMetrics });
    const replica: Replica = {
      name,
      port,
      dir: tmp.dir,
      cert,
      server,
      stop: () => replica.server.close(),
      restart: async () => {
        replica.server = await startTestServer({ dir: tmp.dir, clock, adjust: withMetrics });
      },
    };
    replicas.push(replica);
  }
  if (opts.connect ?? true) {
    for (const r of replicas) {
      for (const other of replicas) {
        if (other !== r) await addPeer(r, other.name, other.server.server.ctx.identity.publicKeyBase64);
      }
    }
  }
  return {
    replicas,
    byName: (name) => {
      const r = replicas.find((x) => x.name === name);
      if (!r) throw new Error(`no replica ${name}`);
      return r;
    },
    close: async () => {
      await Promise.allSettled(replicas.map((r) => r.server.close()));
      for (const cleanup of dirs) cleanup();
    },
  };
}

/** `sydent-ts peers add NAME --pubkey KEY` against a replica's config; throws with the output on failure. */
export async function addPeer(r: Replica, name: string, pubkey: string, extra: string[] = []): Promise<void> {
  const out = await runPeers(r.dir, ['add', name, '--pubkey', pubkey, ...extra]);
  if (out.code !== 0) throw new Error(`peers add failed (${out.code}): ${out.stderr}`);
}

export async function runPeers(
  dir: string,
  words: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await peersMain(['--config', path.join(dir, 'sydent.conf'), 'peers', ...words], {
    stdout: (t) => (stdout += t),
    stderr: (t) => (stderr += t),
    env: {},
    cwd: dir,
  });
  return { code, stdout, stderr };
}

/** Binds through the internal API (no validation), as a deployment that proves ownership out of band does. */
export async function bind(s: TestServer, address: string, mxid: string, medium = 'email'): Promise<void> {
  const res = await fetch(s.internalUrl('/_matrix/identity/internal/bind'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ medium, address, mxid }),
  });
  if (res.status !== 200) throw new Error(`bind: ${res.status} ${await res.text()}`);
}

export async function unbind(s: TestServer, address: string, mxid: string, medium = 'email'): Promise<void> {
  const res = await fetch(s.internalUrl('/_matrix/identity/internal/unbind'), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ medium, address, mxid }),
  });
  if (res.status !== 200) throw new Error(`unbind: ${res.status} ${await res.text()}`);
}

/** The mxid a v1 lookup finds for the address, or null. */
export async function lookup(s: TestServer, address: string, medium = 'email'): Promise<string | null> {
  const q = new URLSearchParams({ medium, address });
  const res = await fetch(s.url(`/_matrix/identity/api/v1/lookup?${q}`));
  if (res.status !== 200) throw new Error(`lookup: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { mxid?: string };
  return body.mxid ?? null;
}

/** `probe`'s value once `done` holds for it (vi.waitFor: every 25 ms, up to `timeoutMs`). */
export function waitFor<T>(probe: () => Promise<T> | T, done: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  return vi.waitFor(
    async () => {
      const value = await probe();
      if (!done(value)) throw new Error(`still waiting; last value: ${JSON.stringify(value)}`);
      return value;
    },
    { timeout: timeoutMs, interval: 25 },
  );
}

/** The debug view of a replica's peers. */
export async function replicationView(s: TestServer): Promise<{
  enabled: boolean;
  peers: Array<{
    name: string;
    state: string;
    cursor: number;
    backlog: number;
    lastError: string | null;
    nextRetryTs: number | null;
  }>;
}> {
  const res = await fetch(s.internalUrl('/_sydent/debug/replication'));
  if (res.status !== 200) throw new Error(`debug/replication: ${res.status} ${await res.text()}`);
  return (await res.json()) as never;
}

/** Replica `a.test`, peer of nobody yet, and a server on loopback to play the peers a test adds to it. */
export interface ReplicaWithFakePeer {
  a: Replica;
  /** the fake peer's port: a test adds it to A with `addPeer(a, name, key, ['--url', …])` */
  peerPort: number;
  close(): Promise<void>;
}

/**
 * The fake peer is an HTTPS server with a certificate for `peerName` that refuses a client whose certificate `ca`
 * did not sign, as Sydent's replication listener does: A's pushes reach it as they would reach a Sydent.
 */
export async function startReplicaWithFakePeer(
  ca: Pem,
  peerName: string,
  onRequest: RequestListener,
): Promise<ReplicaWithFakePeer> {
  const cert = await makePeerCert(ca, peerName);
  const peer = https.createServer(
    { key: cert.key, cert: cert.cert, ca: ca.cert, requestCert: true, rejectUnauthorized: true },
    onRequest,
  );
  const closePeer = async (): Promise<void> => {
    peer.closeAllConnections();
    await new Promise((resolve) => peer.close(resolve));
  };
  await new Promise<void>((resolve) => peer.listen(0, '127.0.0.1', resolve));
  let mesh: Mesh;
  try {
    mesh = await startMesh(ca, ['a.test'], { connect: false });
  } catch (err) {
    await closePeer();
    throw err;
  }
  return {
    a: mesh.replicas[0]!,
    peerPort: (peer.address() as AddressInfo).port,
    close: async () => {
      await mesh.close();
      await closePeer();
    },
  };
}

/** A request's body as text, once all of it has come. */
export function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    req
      .setEncoding('utf8')
      .on('data', (d: string) => (text += d))
      .on('end', () => resolve(text))
      .on('error', reject);
  });
}
