/**
 * What sydent-ts pushes, seen by a peer played by a small HTTPS server on loopback that requires a client
 * certificate: the request matches a Sydent push byte for byte in its content (the same six fields, the same
 * signature, tombstones with nulls), and a refusing peer is backed off from and retried.
 */
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSeed, publicKeyFromSeed, encodeBase64, signJson, verifySignedJson } from '../src/crypto/index.js';
import { expectAssociationFields } from './helpers/bindings.js';
import { makeCa } from './helpers/certs.js';
import {
  addPeer,
  bind,
  readBody,
  replicationView,
  startReplicaWithFakePeer,
  unbind,
  waitFor,
  type Replica,
  type ReplicaWithFakePeer,
} from './helpers/replication.js';

interface Received {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  clientCn: string | undefined;
  body: { sgAssocs: Record<string, Record<string, unknown>> };
}

/** Well before the pusher's 10 s tick: what a wake-up after a bind or unbind must do is done by then. */
const BEFORE_THE_TICK_MS = 5_000;

let setup: ReplicaWithFakePeer;
let a: Replica;
let peerPort: number;
const received: Received[] = [];
let answer: { status: number; body: unknown } = { status: 200, body: { success: true } };

beforeAll(async () => {
  setup = await startReplicaWithFakePeer(await makeCa(), 'fake.test', (req, res) => {
    void readBody(req).then((text) => {
      const socket = req.socket as TLSSocket;
      received.push({
        path: req.url ?? '',
        headers: req.headers,
        clientCn: socket.getPeerCertificate().subject?.CN as string | undefined,
        body: JSON.parse(text) as Received['body'],
      });
      res.writeHead(answer.status, { 'content-type': 'application/json' }).end(JSON.stringify(answer.body));
    });
  });
  ({ a, peerPort } = setup);
}, 30_000);

afterAll(() => setup?.close());

/** Every association the peer received, by id (the latest copy). */
function allReceived(): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  for (const r of received) for (const [id, assoc] of Object.entries(r.body.sgAssocs)) out.set(id, assoc);
  return out;
}

describe('our push, as a peer receives it', () => {
  it('is a Sydent push: same path, headers, fields and signatures; tombstones with nulls', async () => {
    const seed = generateSeed();
    // the peer is added while A runs, its URL written into sydent.conf by the command
    await addPeer(a, 'fake.test', encodeBase64(publicKeyFromSeed(seed)), ['--url', `https://127.0.0.1:${peerPort}`]);
    // Each push follows its bind or unbind, not the next tick (10 s): one that comes while the last push ends too.
    await bind(a.server, 'Alice@Example.org', '@alice:hs.test');
    await waitFor(() => allReceived().has('1'), Boolean, BEFORE_THE_TICK_MS);
    await bind(a.server, 'bob@example.org', '@bob:hs.test');
    await unbind(a.server, 'alice@example.org', '@alice:hs.test');
    await waitFor(
      () => allReceived().size,
      (n) => n === 3,
      BEFORE_THE_TICK_MS,
    );

    for (const r of received) {
      expect(r.path).toBe('/_matrix/identity/replicate/v1/push');
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.clientCn).toBe('a.test');
    }
    const got = allReceived();
    const identity = a.server.server.ctx.identity;
    const alice = got.get('1')!;
    const bob = got.get('2')!;
    const tomb = got.get('3')!;
    // Sydent's Signer.signedThreePidAssociation, done by hand with the same key: identical (ed25519 is deterministic)
    const sydentShaped = (fields: Record<string, unknown>) => signJson(fields, 'a.test', identity.key);
    expect(alice).toEqual(
      sydentShaped({
        medium: 'email',
        address: 'alice@example.org',
        mxid: '@alice:hs.test',
        ts: alice['ts'],
        not_before: alice['ts'],
        not_after: alice['not_after'],
      }),
    );
    expectAssociationFields(bob);
    expect(bob['signatures']).toEqual({ 'a.test': { 'ed25519:0': expect.any(String) } });
    expect(() => verifySignedJson(bob, 'a.test', 'ed25519:0', identity.publicKey)).not.toThrow();
    // §4.2: {"medium","address","mxid": null,"ts": <unbind ms>,"not_before": null,"not_after": null,"signatures"}
    expect(tomb).toEqual(
      sydentShaped({
        medium: 'email',
        address: 'alice@example.org',
        mxid: null,
        ts: tomb['ts'],
        not_before: null,
        not_after: null,
      }),
    );
    expect(typeof tomb['ts']).toBe('number');

    const view = await waitFor(
      () => replicationView(a.server),
      (v) => v.peers[0]?.state === 'idle' && v.peers[0].backlog === 0,
    );
    expect(view.peers[0]).toMatchObject({ name: 'fake.test', cursor: 3, backlog: 0, lastError: null });
    const metrics = a.server.server.ctx.metrics!.registry;
    expect(await metrics.getSingleMetricAsString('sydent_replication_backlog')).toContain(
      'sydent_replication_backlog{peer="fake.test"} 0',
    );
    expect(await metrics.getSingleMetricAsString('sydent_machine_transitions_total')).toContain(
      'sydent_machine_transitions_total{machine="peer",from="idle",to="pushing"}',
    );
  }, 20_000);

  it('a refusing peer is backed off from, then retried; the cursor moves only after a 2xx', async () => {
    answer = { status: 500, body: { errcode: 'M_UNKNOWN', error: 'disk full' } };
    const before = received.length;
    await bind(a.server, 'carol@example.org', '@carol:hs.test');
    const failing = await waitFor(
      () => replicationView(a.server),
      (v) => v.peers[0]?.state === 'backingOff',
    );
    expect(failing.peers[0]).toMatchObject({ cursor: 3, backlog: 1, lastError: 'HTTP 500: M_UNKNOWN: disk full' });
    expect(failing.peers[0]!.nextRetryTs).toEqual(expect.any(Number));
    expect(received.length).toBeGreaterThan(before);

    // binds while backing off do not hammer the peer
    const attempts = received.length;
    await bind(a.server, 'dave@example.org', '@dave:hs.test');
    await new Promise((r) => setTimeout(r, 100));
    expect(received.length).toBe(attempts);

    answer = { status: 200, body: { success: true } };
    const retry = await fetch(a.server.internalUrl('/_sydent/debug/replication/retry'), { method: 'POST' });
    expect(await retry.json()).toEqual({ retried: ['fake.test'] });
    const done = await waitFor(
      () => replicationView(a.server),
      (v) => v.peers[0]?.state === 'idle' && v.peers[0].backlog === 0,
    );
    expect(done.peers[0]).toMatchObject({ cursor: 5, nextRetryTs: null });
    expect([...allReceived().keys()]).toEqual(['1', '2', '3', '4', '5']);
  }, 20_000);
});
