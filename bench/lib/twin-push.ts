/**
 * The bare twin of replication catch-up: a process pair doing the same essential work as two sydent-ts replicating
 * (mutual TLS, the log pushed in batches, every signature checked, each batch stored in one transaction), with
 * nothing else. Not sydent-ts, and imports nothing of it.
 *
 *   node --import tsx bench/lib/twin-push.ts receiver <port> <db> <peer name> <peer verify key> <cert file> <ca file>
 *   node --import tsx bench/lib/twin-push.ts sender <db> <url> <own name> <cert file> <ca file> <batch size>
 *
 * - `receiver`: a bare fastify https server asking for a client certificate under the CA, with one route,
 *   `POST /_matrix/identity/replicate/v1/push` (`{"sgAssocs": {"<origin id>": <signed association>, …}}`, parsed by
 *   fastify): the client certificate's CN must be the peer's; each association's canonical JSON (without
 *   `signatures` and `unsigned`) is checked against its `ed25519:0` signature under the peer's key on 2 worker
 *   threads (the batch cut in two even halves) while the event loop computes the lookup hashes under the pepper read
 *   at start; then the batch goes into `global_threepid_associations` in one transaction (`sgAssoc`: the association
 *   as received). Answers `{"success": true}`, or 400 with the failed ids when a signature does not verify.
 * - `sender`: reads the replication log in id order, `<batch size>` rows at a time, each with the signature its bind
 *   stored in our global row (`sgAssoc`), builds the push body and POSTs it with undici (client certificate, the CA
 *   as the only root), keeping 2 pushes in flight. Exits 0 once every push was answered 2xx, with
 *   `pushed <n> associations in <ms> ms, the first push sent at <ms> ms (cpu <ms> ms)` on stderr, times since its
 *   start (its CPU: all threads; it has ended by the time the bench could read /proc); 1 with the answer on any
 *   other.
 *
 * The certificate file holds the private key and the certificate (PEM), as sydent-ts's `replication.https.certfile`.
 */
import { createPublicKey, hash } from 'node:crypto';
import fs from 'node:fs';
import type { TLSSocket } from 'node:tls';
import { Worker } from 'node:worker_threads';

import { closeOnSignal, openTwinDb } from './twin-db.js';

const PUSH_PATH = '/_matrix/identity/replicate/v1/push';
/** sydent-ts's push body limit (src/http/routes/replicate.ts PUSH_BODY_LIMIT) */
const BODY_LIMIT = 4 * 1024 * 1024;
const KEY_ID = 'ed25519:0';
const VERIFY_THREADS = 2;
const IN_FLIGHT = 2;

/** The private key and the certificates of a combined PEM file. */
function readPem(file: string): { key: string; cert: string } {
  const blocks = fs.readFileSync(file, 'utf8').match(/-----BEGIN ([A-Z ]+)-----[\s\S]+?-----END \1-----/g) ?? [];
  const key = blocks.find((b) => b.includes('PRIVATE KEY-----'));
  const certs = blocks.filter((b) => b.startsWith('-----BEGIN CERTIFICATE-----'));
  if (!key || certs.length === 0) throw new Error(`${file}: no private key and certificate`);
  return { key, cert: certs.join('\n') };
}

type Association = Record<string, string | number | null | Record<string, Record<string, string>>>;

/** Canonical JSON of a flat association (strings, integers, null), without its signatures: keys sorted, no spaces. */
function canonical(a: Association): string {
  let out = '';
  for (const k of Object.keys(a).sort()) {
    if (k === 'signatures' || k === 'unsigned') continue;
    out += `${out ? ',' : '{'}${JSON.stringify(k)}:${JSON.stringify(a[k])}`;
  }
  return out ? `${out}}` : '{}';
}

// From source text, so the worker needs no loader; it checks a slice: payloads one after the other (`ends[i]` is where
// payload i ends) and 64 bytes of signature each, moved in, not copied.
const VERIFY_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { createPublicKey, verify } = require('node:crypto');
const key = createPublicKey({ key: Buffer.from(workerData), format: 'der', type: 'spki' });
parentPort.on('message', ({ payloads, ends, signatures }) => {
  const bad = [];
  let start = 0;
  for (let i = 0; i < ends.length; i++) {
    if (!verify(null, payloads.subarray(start, ends[i]), key, signatures.subarray(i * 64, (i + 1) * 64))) bad.push(i);
    start = ends[i];
  }
  parentPort.postMessage(bad);
});
`;

/** A thread that verifies slices under one key, answering in the order they were sent. */
function verifyThread(spki: Buffer): (payloads: string[], signatures: string[]) => Promise<number[]> {
  const worker = new Worker(VERIFY_WORKER, { eval: true, workerData: spki });
  worker.unref();
  const waiting: Array<{ resolve(bad: number[]): void; reject(e: Error): void }> = [];
  worker.on('message', (bad: number[]) => waiting.shift()?.resolve(bad));
  worker.on('error', (e) => {
    for (const w of waiting.splice(0)) w.reject(e);
  });
  worker.on('exit', (code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`verification thread exited (${code})`));
  });
  return (payloads, signatures) => {
    let size = 0;
    for (const p of payloads) size += p.length * 3;
    const bytes = new Uint8Array(size);
    const text = Buffer.from(bytes.buffer);
    const ends = new Uint32Array(payloads.length);
    const sigs = new Uint8Array(64 * payloads.length);
    const sigBytes = Buffer.from(sigs.buffer);
    let at = 0;
    for (let i = 0; i < payloads.length; i++) {
      at += text.write(payloads[i]!, at);
      ends[i] = at;
      // a signature that is not 64 bytes is left zero, which does not verify
      const sig = Buffer.from(signatures[i]!, 'base64');
      if (sig.length === 64) sigBytes.set(sig, i * 64);
    }
    return new Promise((resolve, reject) => {
      waiting.push({ resolve, reject });
      worker.postMessage({ payloads: bytes, ends, signatures: sigs }, [bytes.buffer, ends.buffer, sigs.buffer]);
    });
  };
}

async function receiver([portArg, dbPath, peerName, peerKey, certFile, caFile]: string[]): Promise<void> {
  const port = Number(portArg);
  const db = openTwinDb(dbPath!);
  const pepper = (
    db.prepare('SELECT lookup_pepper FROM hashing_metadata ORDER BY id LIMIT 1').get() as { lookup_pepper: string }
  ).lookup_pepper;
  const insert = db.prepare(
    `INSERT OR IGNORE INTO global_threepid_associations
     (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  type Row = [string, string, string, string, number, number, number, string, number, string];
  const store = db.transaction((rows: Row[]) => {
    for (const r of rows) insert.run(...r);
  });
  const spki = Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), Buffer.from(peerKey!, 'base64')]);
  createPublicKey({ key: spki, format: 'der', type: 'spki' }); // a bad key fails here, not in the threads
  const threads = Array.from({ length: VERIFY_THREADS }, () => verifyThread(spki));

  const { key, cert } = readPem(certFile!);
  // each side loads only its own framework, so neither process starts slower for the other's
  const { default: Fastify } = await import('fastify');
  const app = Fastify({
    logger: false,
    bodyLimit: BODY_LIMIT,
    https: { key, cert, ca: fs.readFileSync(caFile!, 'utf8'), requestCert: true, rejectUnauthorized: true },
  });
  app.post<{ Body: { sgAssocs: Record<string, Association> } }>(PUSH_PATH, async (req, reply) => {
    if ((req.raw.socket as TLSSocket).getPeerCertificate().subject?.CN !== peerName)
      return reply.code(403).send({ errcode: 'M_UNKNOWN_PEER' });
    const ids = Object.keys(req.body.sgAssocs);
    const payloads: string[] = [];
    const signatures: string[] = [];
    for (const id of ids) {
      const a = req.body.sgAssocs[id]!;
      payloads.push(canonical(a));
      const sig = (a.signatures as Record<string, Record<string, string>> | undefined)?.[peerName!]?.[KEY_ID];
      signatures.push(typeof sig === 'string' ? sig : '');
    }
    const per = Math.ceil(ids.length / threads.length);
    const checked = Promise.all(
      threads.map((verify, t) =>
        verify(payloads.slice(t * per, (t + 1) * per), signatures.slice(t * per, (t + 1) * per)).then((bad) =>
          bad.map((i) => i + t * per),
        ),
      ),
    );
    const rows = ids.map((id, i): Row => {
      const a = req.body.sgAssocs[id]!;
      const [medium, address] = [a.medium as string, a.address as string];
      const sgAssoc = `${payloads[i]!.slice(0, -1)},"signatures":${JSON.stringify(a.signatures)}}`;
      const lookupHash = hash('sha256', `${address} ${medium} ${pepper}`, 'base64url');
      const [ts, notBefore, notAfter] = [a.ts as number, a.not_before as number, a.not_after as number];
      return [medium, address, lookupHash, a.mxid as string, ts, notBefore, notAfter, peerName!, Number(id), sgAssoc];
    });
    const bad = (await checked).flat();
    if (bad.length > 0)
      return reply.code(400).send({ errcode: 'M_VERIFICATION_FAILED', failed_ids: bad.map((i) => ids[i]) });
    store(rows);
    return { success: true };
  });

  await app.listen({ host: '127.0.0.1', port });
  process.stderr.write(`twin push receiver started on ${port}\n`);
  closeOnSignal(app, db);
}

interface LogRow {
  id: number;
  medium: string;
  address: string;
  mxid: string;
  ts: number;
  notBefore: number;
  notAfter: number;
  sgAssoc: string | null;
}

async function sender([dbPath, url, ownName, certFile, caFile, batchArg]: string[]): Promise<void> {
  const db = openTwinDb(dbPath!);
  const batchSize = Number(batchArg);
  // the log and, for each row, what its bind stored in our global row: the signature is sent again, not made again
  const after = db.prepare<[string, number, number], LogRow>(
    `SELECT l.id, l.medium, l.address, l.mxid, l.ts, l.notBefore, l.notAfter, g.sgAssoc
     FROM local_threepid_associations l
     LEFT JOIN global_threepid_associations g ON g.originServer = ? AND g.originId = l.id
     WHERE l.id > ? ORDER BY l.id LIMIT ?`,
  );
  const { key, cert } = readPem(certFile!);
  const { Agent, request } = await import('undici');
  const agent = new Agent({
    connect: { key, cert, ca: fs.readFileSync(caFile!, 'utf8'), rejectUnauthorized: true },
    connections: IN_FLIGHT,
  });

  const fail = (message: string): never => {
    process.stderr.write(`twin push sender: ${message}\n`);
    process.exit(1);
  };
  const push = async (body: string): Promise<void> => {
    try {
      const res = await request(url!, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/json' },
        body,
      });
      const text = await res.body.text();
      if (res.statusCode < 200 || res.statusCode >= 300) fail(`${res.statusCode} ${text.slice(0, 2000)}`);
    } catch (e) {
      const cause = e instanceof Error && e.cause instanceof Error ? `: ${e.cause.message}` : '';
      fail(e instanceof Error ? `${e.message}${cause}` : String(e));
    }
  };

  let cursor = 0;
  let pushed = 0;
  let firstSentMs = 0;
  const inFlight = new Set<Promise<void>>();
  for (;;) {
    const rows = after.all(ownName!, cursor, batchSize);
    if (rows.length === 0) break;
    const sgAssocs: Record<string, unknown> = {};
    for (const r of rows) {
      // the twin has no signing key: the bench's log is all binds of ours, each with its signed association
      if (r.sgAssoc === null) fail(`log row ${r.id} has no signed association of ${ownName}`);
      const signature = (JSON.parse(r.sgAssoc!) as { signatures: Record<string, Record<string, string>> }).signatures[
        ownName!
      ]![KEY_ID];
      sgAssocs[String(r.id)] = {
        medium: r.medium,
        address: r.address,
        mxid: r.mxid,
        ts: r.ts,
        not_before: r.notBefore,
        not_after: r.notAfter,
        signatures: { [ownName!]: { [KEY_ID]: signature } },
      };
    }
    cursor = rows[rows.length - 1]!.id;
    pushed += rows.length;
    firstSentMs ||= performance.now();
    const sent = push(JSON.stringify({ sgAssocs }));
    inFlight.add(sent);
    void sent.finally(() => inFlight.delete(sent));
    if (inFlight.size >= IN_FLIGHT) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  const cpu = process.cpuUsage();
  const cpuMs = Math.round((cpu.user + cpu.system) / 1000);
  process.stderr.write(
    `pushed ${pushed} associations in ${Math.round(performance.now())} ms, the first push sent at ${Math.round(firstSentMs)} ms (cpu ${cpuMs} ms)\n`,
  );
  await agent.close();
  db.close();
  process.exit(0);
}

const [kind, ...args] = process.argv.slice(2);
if (kind === 'receiver' && args.length === 6) await receiver(args);
else if (kind === 'sender' && args.length === 6) await sender(args);
else {
  process.stderr.write('usage: twin-push.ts receiver <port> <db> <peer name> <peer verify key> <cert> <ca>\n');
  process.stderr.write('       twin-push.ts sender <db> <url> <own name> <cert> <ca> <batch size>\n');
  process.exit(2);
}
