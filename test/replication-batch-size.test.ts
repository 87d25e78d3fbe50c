/**
 * `[peer.NAME] push_batch_size`: a peer known to be sydent-ts gets larger pushes than Sydent's 100, seen by a peer
 * played by a small HTTPS server on loopback; the key is checked when the config is read.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { peersFromText } from '../src/replication/peer-config.js';
import { encodeBase64, generateSeed, publicKeyFromSeed } from '../src/crypto/index.js';
import { makeCa } from './helpers/certs.js';
import {
  addPeer,
  bind,
  readBody,
  startReplicaWithFakePeer,
  waitFor,
  type ReplicaWithFakePeer,
} from './helpers/replication.js';

let setup: ReplicaWithFakePeer;
/** the number of associations in each push the peer received, in order */
const pushes: number[] = [];

beforeAll(async () => {
  setup = await startReplicaWithFakePeer(await makeCa(), 'big.test', (req, res) => {
    void readBody(req).then((text) => {
      pushes.push(Object.keys((JSON.parse(text) as { sgAssocs: object }).sgAssocs).length);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"success":true}');
    });
  });
}, 30_000);

afterAll(() => setup?.close());

describe('push_batch_size', () => {
  it('a peer with push_batch_size = 200 gets 250 associations in two pushes: 200, then 50', async () => {
    const { a, peerPort } = setup;
    for (let i = 0; i < 250; i += 25) {
      await Promise.all(
        Array.from({ length: 25 }, (_, j) => bind(a.server, `user${i + j}@example.org`, `@user${i + j}:hs.test`)),
      );
    }
    const conf = path.join(a.dir, 'sydent.conf');
    fs.appendFileSync(conf, '\n[peer.big.test]\npush_batch_size = 200\n');
    await addPeer(a, 'big.test', encodeBase64(publicKeyFromSeed(generateSeed())), [
      '--url',
      `https://127.0.0.1:${peerPort}`,
    ]);
    // a peer added while the server runs is seen within a second (the store sees the CLI's commit), well before the
    // pusher's 10 s tick
    await waitFor(
      () => pushes.reduce((n, p) => n + p, 0),
      (n) => n >= 250,
      5_000,
    );
    expect(pushes).toEqual([200, 50]);
  }, 40_000);

  it('is read per peer, and refused outside 1..5000', () => {
    expect(peersFromText('[peer.big.test]\npush_batch_size = 2000\n', '/')).toEqual({
      'big.test': { pushBatchSize: 2000 },
    });
    expect(() => peersFromText('[peer.big.test]\npush_batch_size = 0\n', '/')).toThrow(/push_batch_size/);
    expect(() => peersFromText('[peer.big.test]\npush_batch_size = 5001\n', '/')).toThrow(/push_batch_size/);
  });
});
