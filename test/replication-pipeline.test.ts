/**
 * Two pushes in flight: the batch after a full one goes to the peer while the peer is still storing that one, when
 * the peer may store the two in either order (no unbind in either, no 3PID in both). Seen by peers played by a small
 * HTTPS server on loopback that requires a client certificate, answers late on purpose and counts what is in
 * flight. The cursor still moves batch by batch after each 2xx: a batch refused in the middle holds it, whatever the
 * answer to the batch sent after it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBase64, generateSeed, publicKeyFromSeed } from '../src/crypto/index.js';
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

interface Push {
  /** the log ids it carried, in order */
  ids: number[];
  hasTombstone: boolean;
  /** other pushes to the same peer not yet answered when it arrived */
  othersInFlight: number;
  status: number;
}

/** One fake peer: its pushes, and how it answers the nth one (0-based). */
interface FakePeer {
  pushes: Push[];
  inFlight: number;
  answer: (n: number) => { status: number; delayMs: number };
}

const BATCH = 10;
let setup: ReplicaWithFakePeer;
let a: Replica;
let port: number;
const peers = new Map<string, FakePeer>();

beforeAll(async () => {
  setup = await startReplicaWithFakePeer(await makeCa(), 'peers.test', (req, res) => {
    // the peer is the first path segment: https://127.0.0.1:PORT/<peer>/_matrix/identity/replicate/v1/push
    const peer = peers.get((req.url ?? '').split('/')[1] ?? '');
    if (!peer) return void res.writeHead(404).end();
    // counted on arrival, not once the body is in: what was in flight when this push came
    const othersInFlight = peer.inFlight++;
    void readBody(req).then((text) => {
      const { sgAssocs } = JSON.parse(text) as { sgAssocs: Record<string, { mxid: string | null }> };
      const { status, delayMs } = peer.answer(peer.pushes.length);
      peer.pushes.push({
        ids: Object.keys(sgAssocs).map(Number),
        hasTombstone: Object.values(sgAssocs).some((s) => s.mxid === null),
        othersInFlight,
        status,
      });
      setTimeout(() => {
        peer.inFlight--;
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(status === 200 ? { success: true } : { errcode: 'M_UNKNOWN', error: 'try later' }));
      }, delayMs);
    });
  });
  ({ a, peerPort: port } = setup);
  // The log: u1…u60 bound, then u5 unbound (a tombstone, id 61, in place of u5's row): 60 rows.
  for (let i = 1; i <= 60; i += 20) {
    await Promise.all(
      Array.from({ length: 20 }, (_, j) => bind(a.server, `u${i + j}@example.org`, `@u${i + j}:hs.test`)),
    );
  }
  await unbind(a.server, 'u5@example.org', '@u5:hs.test');
}, 60_000);

afterAll(() => setup?.close());

/** Adds a fake peer to A, `push_batch_size` = BATCH, its pushes going to /<name>/ on the loopback server. */
async function addFakePeer(name: string, answer: FakePeer['answer']): Promise<FakePeer> {
  const peer: FakePeer = { pushes: [], inFlight: 0, answer };
  peers.set(name, peer);
  fs.appendFileSync(path.join(a.dir, 'sydent.conf'), `\n[peer.${name}]\npush_batch_size = ${BATCH}\n`);
  await addPeer(a, name, encodeBase64(publicKeyFromSeed(generateSeed())), [
    '--url',
    `https://127.0.0.1:${port}/${name}`,
  ]);
  return peer;
}

const viewOf = async (name: string) => (await replicationView(a.server)).peers.find((p) => p.name === name);
const received = (peer: FakePeer) => new Set(peer.pushes.filter((p) => p.status === 200).flatMap((p) => p.ids));

describe('pushes in flight together', () => {
  it('a full batch of bindings is followed at once by the next; a batch with an unbind goes alone', async () => {
    const peer = await addFakePeer('slow.test', () => ({ status: 200, delayMs: 150 }));
    const done = await waitFor(
      () => viewOf('slow.test'),
      (v) => v?.state === 'idle' && v.cursor === 61,
      30_000,
    );
    expect(done).toMatchObject({ backlog: 0, lastError: null });
    const all = [...Array.from({ length: 60 }, (_, i) => i + 1).filter((id) => id !== 5), 61];
    expect([...received(peer)].sort((x, y) => x - y)).toEqual(all);
    // sent in log order, each batch once
    expect(peer.pushes.flatMap((p) => p.ids)).toEqual(all);
    // bindings only: the next batch was on its way while the peer was storing the one before; never more than two
    expect(Math.max(...peer.pushes.map((p) => p.othersInFlight))).toBe(1);
    // the last batch carries the tombstone: it went out only after the batch before it was answered
    const withTombstone = peer.pushes.filter((p) => p.hasTombstone);
    expect(withTombstone.map((p) => p.ids.at(-1))).toEqual([61]);
    expect(withTombstone[0]!.othersInFlight).toBe(0);
  }, 40_000);

  it('a batch refused while the next one is acknowledged holds the cursor before it; a retry sends both again', async () => {
    // the third push is refused, late; the fourth, sent while the third was in flight, is acknowledged at once
    let failing = true;
    const peer = await addFakePeer('flaky.test', (n) =>
      n === 2 && failing ? { status: 500, delayMs: 400 } : { status: 200, delayMs: n === 2 ? 400 : 20 },
    );
    const backingOff = await waitFor(
      () => viewOf('flaky.test'),
      (v) => v?.state === 'backingOff',
      30_000,
    );
    expect(peer.pushes).toHaveLength(4);
    const [first, second, refused, after] = peer.pushes as [Push, Push, Push, Push];
    expect(refused.status).toBe(500);
    expect(after.othersInFlight).toBe(1);
    expect(after.status).toBe(200);
    expect(after.ids[0]).toBeGreaterThan(refused.ids.at(-1)!);
    // acknowledged up to the batch before the refused one, not past it
    expect(backingOff).toMatchObject({ cursor: second.ids.at(-1), lastError: 'HTTP 500: M_UNKNOWN: try later' });
    expect(first.ids.at(-1)).toBeLessThan(second.ids[0]!);
    expect(second.ids.at(-1)).toBeLessThan(refused.ids[0]!);

    failing = false;
    const retry = await fetch(a.server.internalUrl('/_sydent/debug/replication/retry?peer=flaky.test'), {
      method: 'POST',
    });
    expect(await retry.json()).toEqual({ retried: ['flaky.test'] });
    await waitFor(
      () => viewOf('flaky.test'),
      (v) => v?.state === 'idle' && v.cursor === 61,
      30_000,
    );
    // from the cursor again: the refused batch, and the one acknowledged while it failed
    expect(peer.pushes.slice(4, 6).map((p) => p.ids[0])).toEqual(
      expect.arrayContaining([refused.ids[0], after.ids[0]]),
    );
    expect(
      peer.pushes
        .slice(4, 6)
        .flatMap((p) => p.ids)
        .sort((x, y) => x - y),
    ).toEqual([...refused.ids, ...after.ids].sort((x, y) => x - y));
    expect(received(peer).size).toBe(60);
  }, 40_000);
});
