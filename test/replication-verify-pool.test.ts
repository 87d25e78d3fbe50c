/**
 * Signature checks of large pushes on worker threads: the pool itself (real threads), then a replica taking
 * pushes large enough to go there, refusing one with bad signatures in several slices whole, storing a good one
 * whole, and ending its threads when it stops.
 */
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  encodeBase64,
  generateSeed,
  publicKeyFromSeed,
  signJson,
  signedPayload,
  verifyKeyObject,
} from '../src/crypto/index.js';
import { defaultVerifyPoolSize, VerifyPool, VerifyPoolClosedError } from '../src/crypto/verify-pool.js';
import { POOL_MIN_ASSOCIATIONS } from '../src/replication/receive.js';
import { makeCa, type Pem } from './helpers/certs.js';
import { addPeer, lookup, makePeerCert, startMesh, type Mesh, type Replica } from './helpers/replication.js';
import { rows } from './helpers/rows.js';

const DAY = 24 * 3600_000;
const seed = generateSeed();
const key = { version: '0', seed };

function association(i: number, tag: string, ts: number) {
  return {
    medium: 'email',
    address: `${tag}${i}@pool.example.org`,
    mxid: `@${tag}${i}:hs.test`,
    ts,
    not_before: ts,
    not_after: ts + 100 * DAY,
  };
}

/** `n` associations signed as `signer`, keyed from `first`. */
function signedBatch(signer: string, first: number, n: number, tag: string, ts: number) {
  return Object.fromEntries(
    Array.from({ length: n }, (_, i) => [String(first + i), signJson(association(i, tag, ts + i), signer, key)]),
  );
}

/** The OS threads of this process (Linux): worker threads are among them. */
function threadCount(): number {
  return fs.readdirSync('/proc/self/task').length;
}

describe('the verification pool', () => {
  const publicKey = verifyKeyObject(publicKeyFromSeed(seed));
  const items = (n: number) =>
    Object.values(signedBatch('a.test', 1, n, 'unit', 1_000)).map((v) => {
      const { payload, signature } = signedPayload(v, 'a.test', 'ed25519:0');
      return { payload: Buffer.from(payload), signature };
    });

  it('splits a batch over its threads and reports the bad signatures of every slice, in order', async () => {
    const pool = new VerifyPool(3);
    try {
      const batch = items(30);
      // one in each of the three slices of ten, and the very last one
      for (const i of [0, 14, 25, 29]) batch[i] = { ...batch[i]!, signature: batch[(i + 1) % 30]!.signature };
      expect(await pool.verifyAll(publicKey, batch)).toEqual([0, 14, 25, 29]);
      expect(pool.threads).toBe(3);
      expect(await pool.verifyAll(publicKey, items(7))).toEqual([]);
    } finally {
      await pool.close();
    }
  });

  it('a batch that cannot be checked is refused, not left hanging, and the threads go on', async () => {
    const pool = new VerifyPool(2);
    try {
      // an X25519 key cannot verify anything: node:crypto throws in the thread
      const wrongKind = generateKeyPairSync('x25519').publicKey;
      await expect(pool.verifyAll(wrongKind, items(4))).rejects.toThrow(/not supported for this keytype/);
      const batch = items(4);
      batch[3] = { ...batch[3]!, signature: batch[0]!.signature };
      expect(await pool.verifyAll(publicKey, batch)).toEqual([3]);
    } finally {
      await pool.close();
    }
  });

  it('close ends its threads and refuses further batches', async () => {
    const pool = new VerifyPool(2);
    await pool.verifyAll(publicKey, items(4));
    expect(pool.threads).toBe(2);
    await pool.close();
    expect(pool.threads).toBe(0);
    await expect(pool.verifyAll(publicKey, items(4))).rejects.toBeInstanceOf(VerifyPoolClosedError);
  });
});

describe('a replica taking large pushes', () => {
  const PEER = 'a.test';
  const N = 2000;
  const t0 = Date.now() - 60_000;
  let ca: Pem;
  let mesh: Mesh;
  let b: Replica;
  let agent: Agent;

  beforeAll(async () => {
    ca = await makeCa();
    mesh = await startMesh(ca, ['b.test'], { connect: false });
    b = mesh.replicas[0]!;
    await addPeer(b, PEER, encodeBase64(publicKeyFromSeed(seed)));
    const cert = await makePeerCert(ca, PEER);
    agent = new Agent({ connect: { key: cert.key, cert: cert.cert, ca: ca.cert } });
  }, 30_000);

  afterAll(async () => {
    await agent?.close();
    await mesh?.close();
  });

  async function push(sgAssocs: Record<string, unknown>): Promise<{ status: number; json: unknown }> {
    const res = await request(`https://127.0.0.1:${b.port}/_matrix/identity/replicate/v1/push`, {
      method: 'POST',
      dispatcher: agent,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sgAssocs }),
    });
    return { status: res.statusCode, json: await res.body.json() };
  }

  const stored = () =>
    rows(
      path.join(b.dir, 'sydent.db'),
      'SELECT originId FROM global_threepid_associations WHERE originServer = ?',
      PEER,
    );

  let threadsBefore: number;
  let threadsWithPool: number;

  it('a push too small for the pool is checked without starting any thread', async () => {
    expect(await push(signedBatch(PEER, 1, POOL_MIN_ASSOCIATIONS - 1, 'small', t0))).toEqual({
      status: 200,
      json: { success: true },
    });
    threadsBefore = threadCount();
  });

  it('is refused whole, every failing id reported, when signatures fail in several slices', async () => {
    const before = stored().length;
    const sgAssocs = signedBatch(PEER, 10_001, N, 'bad', t0);
    const forge = (id: number) => {
      const target = sgAssocs[String(id)] as { signatures: Record<string, Record<string, string>> };
      target.signatures[PEER]!['ed25519:0'] = (sgAssocs['10001'] as typeof target).signatures[PEER]!['ed25519:0']!;
    };
    // the second, the middle and the last: in different threads' slices
    for (const id of [10_002, 11_000, 12_000]) forge(id);
    // and one signed right whose fields are wrong
    sgAssocs['11500'] = signJson(
      { ...association(1500, 'bad', t0), ts: 'soon' } as unknown as ReturnType<typeof association>,
      PEER,
      key,
    );
    const res = await push(sgAssocs);
    expect(res).toEqual({
      status: 400,
      json: {
        errcode: 'M_VERIFICATION_FAILED',
        error: 'Verification failed for one or more associations',
        failed_ids: ['10002', '11000', '11500', '12000'],
      },
    });
    expect(stored()).toHaveLength(before);
    expect(await lookup(b.server, 'bad1@pool.example.org')).toBeNull();
    threadsWithPool = threadCount();
    expect(threadsWithPool - threadsBefore).toBeGreaterThanOrEqual(defaultVerifyPoolSize());
  });

  it('is stored whole when every signature verifies', async () => {
    const res = await push(signedBatch(PEER, 20_001, N, 'good', t0));
    expect(res).toEqual({ status: 200, json: { success: true } });
    const ids = stored()
      .map((r) => r['originId'] as number)
      .filter((id) => id > 20_000);
    expect(ids.sort((x, y) => x - y)).toEqual(Array.from({ length: N }, (_, i) => 20_001 + i));
    expect(await lookup(b.server, `good${N - 1}@pool.example.org`)).toBe(`@good${N - 1}:hs.test`);
  });

  it('ends its verification threads when it stops', async () => {
    await b.stop();
    expect(threadCount()).toBeLessThanOrEqual(threadsWithPool - defaultVerifyPoolSize());
  });
});
