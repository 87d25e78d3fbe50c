/**
 * Several nodes on one PostgreSQL database: two sydent-ts processes (A and B), as an operator runs them behind a
 * load balancer, on one database; a real SMTP server, a homeserver on loopback (onbind callbacks) and a replication
 * peer (a sydent-ts of its own). Shared by the cases, in order:
 *  - one user's flow goes from node to node (requestToken on A, submitToken on B, bind on A, lookup on B);
 *  - 200 requestTokens at once for one client_secret/email/send_attempt, spread over both: one session, one mail;
 *  - a rate limit holds across both (wrong submitTokens from one client address, spread over both);
 *  - a bind on B wakes A, the node that holds the peer's lease, which pushes it at once;
 *  - A is killed (SIGKILL) with callbacks claimed and a flow half done: B finishes the flow, delivers A's
 *    callbacks once its claims have expired (each row once), and takes over the push to the peer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { formatSigningKey, generateSigningKey } from '../src/config/signing-key.js';
import { makeCa } from './helpers/certs.js';
import { call, emailConf, mailLink, sameMailbox, type Reply } from './helpers/email.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import { inviteBody } from './helpers/invites.js';
import { testDatabase, type TestDatabase } from './helpers/postgres.js';
import { freePort, spawnServer, waitForStart, type ServerProcess } from './helpers/process.js';
import { addPeer, lookup, makePeerCert, startMesh, waitFor, writeCertFiles, type Mesh } from './helpers/replication.js';
import { psql } from './helpers/rows.js';
import type { TestServer } from './helpers/server.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';
import { tempDir } from './helpers/tmp.js';

const SERVER_NAME = 'is.example.test';
const PEER = 'peer.test';
const V1 = '/_matrix/identity/api/v1';
const ONBIND = '/_matrix/federation/v1/3pid/onbind';
/** short, so that B takes over A's callbacks within the test */
const CLAIM_SECONDS = 3;
const SUBMIT_BURST = 4;

interface Node {
  name: string;
  proc: ServerProcess;
  /** the same shape as an in-process server's, for the helpers */
  http: TestServer;
  url(p: string): string;
  internalUrl(p: string): string;
}

let db: TestDatabase;
let smtp: SmtpTestServer;
let env: FederationEnv;
let mesh: Mesh;
let tmp: ReturnType<typeof tempDir>;
let a: Node;
let b: Node;
/** while set, the homeserver holds its onbind answers until it resolves */
let onbindGate: Promise<void> | null = null;
let openGate: () => void = () => undefined;

function holdOnbinds(): void {
  onbindGate = new Promise<void>((resolve) => {
    openGate = () => {
      onbindGate = null;
      resolve();
    };
  });
}

const sql = (text: string): string => psql(db.url, text).trim();

async function startNode(name: string, confText: string): Promise<Node> {
  const dir = path.join(tmp.dir, name);
  fs.mkdirSync(dir);
  const [port, internalPort, replicationPort] = [await freePort(), await freePort(), await freePort()];
  const confPath = path.join(dir, 'sydent.conf');
  fs.writeFileSync(
    confPath,
    confText
      .replace('@NODE@', name)
      .replace('@PORT@', String(port))
      .replace('@INTERNAL_PORT@', String(internalPort))
      .replace('@REPLICATION_PORT@', String(replicationPort))
      .replace('@DBFILE@', path.join(dir, 'sydent.db')),
    { mode: 0o600 },
  );
  const proc = spawnServer({ cwd: dir, args: ['--config', confPath] });
  await waitForStart(proc);
  const url = (p: string) => `http://127.0.0.1:${port}${p}`;
  const internalUrl = (p: string) => `http://127.0.0.1:${internalPort}${p}`;
  return { name, proc, url, internalUrl, http: { url, internalUrl } as unknown as TestServer };
}

function confText(certfile: string, cacert: string, signingKey: string): string {
  const sections = mergeConf(env.conf, {
    general: {
      'server.name': SERVER_NAME,
      node_name: '@NODE@',
      callback_claim_seconds: String(CLAIM_SECONDS),
    },
    db: { 'db.engine': 'postgresql', 'db.url': db.url, 'db.file': '@DBFILE@' },
    http: {
      'clientapi.http.bind_address': '127.0.0.1',
      'clientapi.http.port': '@PORT@',
      'internalapi.http.bind_address': '127.0.0.1',
      'internalapi.http.port': '@INTERNAL_PORT@',
      client_http_base: `https://${SERVER_NAME}`,
      'replication.https.certfile': certfile,
      'replication.https.cacert': cacert,
      'replication.https.bind_address': '127.0.0.1',
      'replication.https.port': '@REPLICATION_PORT@',
      // the load balancer in front says who the client is
      obey_x_forwarded_for: 'true',
      trusted_proxies: '127.0.0.0/8',
      'submit_token.ratelimit.burst': String(SUBMIT_BURST),
      'submit_token.ratelimit.rate_hz': String(1 / 3600),
    },
    email: emailConf(smtp.port),
    crypto: { 'ed25519.signingkey': signingKey },
    [`peer.${PEER}`]: { base_replication_url: `https://127.0.0.1:${mesh.byName(PEER).port}` },
  });
  return `${Object.entries(sections)
    .map(([name, values]) => [`[${name}]`, ...Object.entries(values).map(([k, v]) => `${k} = ${v}`)].join('\n'))
    .join('\n\n')}\n`;
}

const requestToken = (n: Node, body: Record<string, unknown>, headers?: Record<string, string>): Promise<Reply> =>
  call(n.url(`${V1}/validate/email/requestToken`), { body, ...(headers ? { headers } : {}) });
const submitToken = (n: Node, body: Record<string, unknown>, headers?: Record<string, string>): Promise<Reply> =>
  call(n.url(`${V1}/validate/email/submitToken`), { body, ...(headers ? { headers } : {}) });
const bindV1 = (n: Node, body: Record<string, unknown>): Promise<Reply> => call(n.url(`${V1}/3pid/bind`), { body });
const internalBind = (n: Node, address: string, mxid: string): Promise<Reply> =>
  call(n.internalUrl('/_matrix/identity/internal/bind'), { body: { medium: 'email', address, mxid } });

async function tokenMailed(address: string): Promise<string> {
  const mail = await smtp.waitForMessage((m) => m.to.some((r) => sameMailbox(r, address)));
  const token = mailLink(mail).searchParams.get('token');
  if (!token) throw new Error('no token in the mail');
  return token;
}

async function debug<T>(n: Node, p: string): Promise<{ node: string | null; body: T }> {
  const res = await fetch(n.internalUrl(p));
  expect(res.status).toBe(200);
  return { node: res.headers.get('x-sydent-node'), body: (await res.json()) as T };
}

type PeerView = { node: string; peers: { name: string; pusher: string | null; cursor: number; backlog: number }[] };
const peerOf = async (n: Node) =>
  (await debug<PeerView>(n, '/_sydent/debug/replication')).body.peers.find((p) => p.name === PEER);

beforeAll(async () => {
  tmp = tempDir('sydent-ts-multinode-');
  const ca = await makeCa();
  [db, smtp, env, mesh] = await Promise.all([
    testDatabase(),
    startSmtpServer(),
    startFederationEnv({
      [`POST ${ONBIND}`]: async () => {
        if (onbindGate) await onbindGate;
        return { json: {} };
      },
    }),
    startMesh(ca, [PEER], { connect: false }),
  ]);
  const files = writeCertFiles(tmp.dir, await makePeerCert(ca, SERVER_NAME), ca);
  const conf = confText(files.certfile, files.cacert, formatSigningKey(generateSigningKey()));

  a = await startNode('node-a', conf);
  // Our nodes push to the peer (a row, as an operator adds one); the peer knows us by our key.
  const pubkey = (await call(a.url(`${V1}/pubkey/ed25519:0`))).json['public_key'] as string;
  await addPeer(mesh.byName(PEER), SERVER_NAME, pubkey);
  const peerKey = mesh.byName(PEER).server.server.ctx.identity.publicKeyBase64;
  sql(`INSERT INTO peers (name, port, lastSentVersion, active) VALUES ('${PEER}', NULL, NULL, 1);
       INSERT INTO peer_pubkeys (peername, alg, key) VALUES ('${PEER}', 'ed25519', '${peerKey}')`);
  // A binds first and so becomes the peer's pusher; B starts after.
  expect((await internalBind(a, 'first@example.org', '@first:hs.test')).status).toBe(200);
  await waitFor(
    () => lookup(mesh.byName(PEER).server, 'first@example.org'),
    (m) => m === '@first:hs.test',
  );
  b = await startNode('node-b', conf);
}, 120_000);

afterAll(async () => {
  if (process.env['MN_DUMP']) for (const n of [a, b]) if (n) fs.writeFileSync(`/tmp/mn-${n.name}.log`, n.proc.stderr());
  openGate();
  for (const n of [a, b]) n?.proc.child.kill('SIGKILL');
  await Promise.all([a, b].map((n) => n?.proc.exited));
  await mesh?.close();
  await smtp?.close();
  await env?.close();
  await db?.drop();
  tmp?.cleanup();
});

describe('two nodes on one PostgreSQL', () => {
  it('each answers as itself: /ready and the debug endpoints name the node', async () => {
    for (const n of [a, b]) {
      const ready = await call(n.url('/ready'));
      expect(ready.status).toBe(200);
      expect(ready.json).toMatchObject({ ready: true, database: 'ok', node: n.name });
      const summary = await debug<{ server: { node: { name: string } } }>(n, '/_sydent/debug/summary');
      expect(summary.node).toBe(n.name);
      expect(summary.body.server.node.name).toBe(n.name);
    }
  });

  it('one flow across both: requestToken on A, submitToken on B, bind on A, lookup on B', async () => {
    const address = 'across@example.org';
    const start = await requestToken(a, { client_secret: 'across-secret', email: address, send_attempt: 1 });
    expect(start.status, start.text).toBe(200);
    const sid = start.json['sid'] as string;
    const token = await tokenMailed(address);
    const submitted = await submitToken(b, { sid, client_secret: 'across-secret', token });
    expect(submitted.status, submitted.text).toBe(200);
    expect(submitted.json).toEqual({ success: true });
    const bound = await bindV1(a, { sid, client_secret: 'across-secret', mxid: '@across:hs.test' });
    expect(bound.status, bound.text).toBe(200);
    expect(bound.json).toMatchObject({ address, mxid: '@across:hs.test' });
    expect(await lookup(b.http, address)).toBe('@across:hs.test');
  });

  it('200 requestTokens at once for one client_secret/email/send_attempt, spread over both: one session, one mail', async () => {
    const address = 'crowd@example.org';
    const before = smtp.messages.length;
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        requestToken(i % 2 ? a : b, { client_secret: 'crowd-secret', email: address, send_attempt: 1 }),
      ),
    );
    const byAnswer: Record<string, number> = {};
    for (const r of answers) {
      const answer = r.status === 200 ? '200' : `${r.status} ${r.text}`;
      byAnswer[answer] = (byAnswer[answer] ?? 0) + 1;
    }
    expect(byAnswer).toEqual({ '200': 200 });
    expect(new Set(answers.map((r) => r.json['sid'])).size).toBe(1);
    await smtp.waitForMessage((m) => m.to.some((r) => sameMailbox(r, address)));
    // A second mail would be on its way by now.
    await new Promise((r) => setTimeout(r, 1_000));
    expect(smtp.messages.slice(before).filter((m) => m.to.some((r) => sameMailbox(r, address)))).toHaveLength(1);
    expect(sql(`SELECT count(*) FROM threepid_validation_sessions WHERE address = '${address}'`)).toBe('1');
  }, 60_000);

  it('100 requestTokens at once for different sessions on each node: each its own session and mail, and the locks taken in turn on the coordinating connection', async () => {
    const before = smtp.messages.length;
    const address = (i: number) => `many-${i}@example.org`;
    const answers = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        requestToken(i % 2 ? a : b, { client_secret: `many-secret-${i}`, email: address(i), send_attempt: 1 }),
      ),
    );
    expect(answers.filter((r) => r.status !== 200).map((r) => `${r.status} ${r.text}`)).toEqual([]);
    expect(new Set(answers.map((r) => r.json['sid'])).size).toBe(200);
    await waitFor(
      () => smtp.messages.length - before,
      (n) => n >= 200,
      30_000,
    );
    const mailed = smtp.messages.slice(before).flatMap((m) => m.to);
    for (let i = 0; i < 200; i++)
      expect(
        mailed.filter((r) => sameMailbox(r, address(i))),
        address(i),
      ).toHaveLength(1);
    expect(sql(`SELECT count(*) FROM threepid_validation_sessions WHERE address LIKE 'many-%'`)).toBe('200');
    // Each node's request locks are taken on its one coordinating connection, one query at a time: pg 8 warns on
    // stderr of a query sent while another runs on a client, and pg 9 refuses it.
    for (const node of [a, b]) expect(node.proc.stderr(), node.name).not.toMatch(/Warning/);
  }, 60_000);

  it('a rate limit holds across both: wrong submitTokens from one client, spread over A and B, are refused after one burst', async () => {
    const start = await requestToken(a, { client_secret: 'guess-secret', email: 'guess@example.org', send_attempt: 1 });
    const sid = start.json['sid'] as string;
    const client = { 'x-forwarded-for': '203.0.113.9' };
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        submitToken(i % 2 ? a : b, { sid, client_secret: 'guess-secret', token: `wrong${i}` }, client),
      ),
    );
    const limited = answers.filter((r) => r.status === 429);
    expect(answers.length - limited.length).toBe(SUBMIT_BURST);
    expect(limited[0]?.json).toMatchObject({ errcode: 'M_LIMIT_EXCEEDED' });
    // Another client is not held back by it.
    const other = await submitToken(
      b,
      { sid, client_secret: 'guess-secret', token: 'wrong' },
      { 'x-forwarded-for': '203.0.113.10' },
    );
    expect(other.status).not.toBe(429);
  });

  it('a bind on B wakes A, which holds the peer: the peer has it at once, pushed by A', async () => {
    expect((await peerOf(a))?.pusher).toBe('here');
    // A looks by itself only every 10 s: three binds in a row, each at the peer within 3 s (a tick could
    // explain one of them at most), were each told.
    for (let i = 0; i < 3; i++) {
      expect(await internalBind(b, `woken${i}@example.org`, '@woken:hs.test')).toMatchObject({ status: 200 });
      await waitFor(
        () => lookup(mesh.byName(PEER).server, `woken${i}@example.org`),
        (m) => m === '@woken:hs.test',
        3_000,
      );
    }
    expect((await peerOf(b))?.pusher).not.toBe('here');
    expect((await peerOf(a))?.backlog).toBe(0);
  });

  it('A killed mid-flow with callbacks claimed: B finishes the flow, delivers each of A’s callbacks after its claim expires, and pushes to the peer', async () => {
    // Invites wait for three addresses; their binds on A queue onbind callbacks, which the homeserver holds.
    const invited = ['inv0@example.org', 'inv1@example.org', 'inv2@example.org'];
    for (const address of invited) {
      const res = await call(b.url(`${V1}/store-invite`), {
        body: inviteBody({ address, sender: `@alice:${env.serverName}` }),
      });
      expect(res.status, res.text).toBe(200);
    }
    holdOnbinds();
    for (const address of invited)
      expect((await internalBind(a, address, `@${address.slice(0, 4)}:${env.serverName}`)).status).toBe(200);
    const inFlight = async (n: Node) =>
      (await debug<{ inFlight: number[] }>(n, '/_sydent/debug/callbacks')).body.inFlight;
    const invitedIds = sql(
      `SELECT string_agg(id::text, ',') FROM callback_outbox WHERE address LIKE 'inv_@example.org'`,
    )
      .split(',')
      .map(Number);
    const claimedByA = (
      await waitFor(
        () => inFlight(a),
        (ids) => ids.some((id) => invitedIds.includes(id)),
      )
    ).filter((id) => invitedIds.includes(id));
    await waitFor(
      () => env.hs.requests.filter((r) => r.url === ONBIND).length,
      (n) => n >= claimedByA.length,
    );
    // A flow half done on A: the token is mailed.
    const address = 'halfway@example.org';
    const started = await requestToken(a, { client_secret: 'halfway-secret', email: address, send_attempt: 1 });
    expect(started.status).toBe(200);
    const token = await tokenMailed(address);

    a.proc.child.kill('SIGKILL');
    await a.proc.exited;
    openGate();

    // B finishes the flow.
    const sid = started.json['sid'] as string;
    expect((await submitToken(b, { sid, client_secret: 'halfway-secret', token })).json).toEqual({ success: true });
    expect((await bindV1(b, { sid, client_secret: 'halfway-secret', mxid: '@halfway:hs.test' })).status).toBe(200);
    expect(await lookup(b.http, address)).toBe('@halfway:hs.test');

    // Every callback is delivered: A's by B once their claims have run out.
    const ours = `address IN (${invited.map((x) => `'${x}'`).join(',')})`;
    const states = () => sql(`SELECT string_agg(state, ',' ORDER BY id) FROM callback_outbox WHERE ${ours}`);
    await waitFor(states, (s) => s === 'delivered,delivered,delivered', (CLAIM_SECONDS + 10) * 1000);
    await new Promise((r) => setTimeout(r, 1_000));
    const onbinds = env.hs.requests
      .filter((r) => r.url === ONBIND)
      .map((r) => (JSON.parse(r.body) as { address: string }).address);
    const aAddresses = new Set(
      sql(`SELECT string_agg(address, ',') FROM callback_outbox WHERE id IN (${claimedByA.join(',')})`).split(','),
    );
    for (const inv of invited) {
      // A's cut attempt (never answered) and B's delivery; B's own rows at least once. Delivery is at least once:
      // while the homeserver holds its answers, a claim can run out (the test's are short) and the row be tried
      // again, so more attempts than these are allowed, and the row's state above says it was delivered once.
      const requests = onbinds.filter((x) => x === inv).length;
      expect({ inv, requests }).toEqual({ inv, requests: Math.max(requests, aAddresses.has(inv) ? 2 : 1) });
    }

    // The peer: B takes over the push once it hears of a new bind.
    expect((await internalBind(b, 'after@example.org', '@after:hs.test')).status).toBe(200);
    await waitFor(
      () => lookup(mesh.byName(PEER).server, 'after@example.org'),
      (m) => m === '@after:hs.test',
      10_000,
    );
    expect(await lookup(mesh.byName(PEER).server, 'halfway@example.org')).toBe('@halfway:hs.test');
    expect((await peerOf(b))?.pusher).toBe('here');
  }, 60_000);
});
