/**
 * Replication between three sydent-ts instances on loopback, over real mutual TLS with certificates made here:
 * binds and unbinds travel from A to B and C; a peer that was down catches up with everything, once.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeCa } from './helpers/certs.js';
import { bind, lookup, replicationView, startMesh, unbind, waitFor, type Mesh } from './helpers/replication.js';
import { openRowReader, type RowReader } from './helpers/rows.js';

let mesh: Mesh;

beforeAll(async () => {
  const ca = await makeCa();
  mesh = await startMesh(ca, ['a.test', 'b.test', 'c.test']);
  // the first test of a run on PostgreSQL starts its server
}, 120_000);

afterAll(async () => {
  for (const reader of readers.values()) await (await reader).close();
  await mesh?.close();
});

/**
 * Readers of the replicas' databases, one connection each kept while the tests poll them: SQLite's file (in WAL,
 * beside the running server) or PostgreSQL's database. Not psql: a synchronous read would stall the servers, which run
 * in this process, for as long as it takes, and a catch-up polled that way crawls.
 */
const readers = new Map<string, Promise<RowReader>>();

/** A replica's rows from `origin`, as its database has them now. */
async function globalRows(
  dir: string,
  origin: string,
): Promise<Array<{ originId: number; address: string; mxid: string }>> {
  let reader = readers.get(dir);
  if (!reader) {
    reader = openRowReader(path.join(dir, 'sydent.db'));
    readers.set(dir, reader);
  }
  return (await reader).rows(
    'SELECT originId, address, mxid FROM global_threepid_associations WHERE originServer = ? ORDER BY originId',
    origin,
  );
}

describe('replication between three sydent-ts instances', () => {
  it('a bind on A is found by lookups on B and C; an unbind on A disappears on B and C', async () => {
    const [a, b, c] = mesh.replicas;
    await bind(a!.server, 'Alice@Example.org', '@alice:hs.test');
    expect(await lookup(a!.server, 'alice@example.org')).toBe('@alice:hs.test');
    for (const r of [b!, c!]) {
      expect(
        await waitFor(
          () => lookup(r.server, 'ALICE@example.org'),
          (m) => m !== null,
        ),
      ).toBe('@alice:hs.test');
    }
    // what B stored: A's row, by A's id, with A's signature as received
    const stored = await globalRows(b!.dir, 'a.test');
    expect(stored.map((r) => r.address)).toEqual(['alice@example.org']);

    await unbind(a!.server, 'alice@example.org', '@alice:hs.test');
    expect(await lookup(a!.server, 'alice@example.org')).toBeNull();
    for (const r of [b!, c!]) {
      expect(
        await waitFor(
          () => lookup(r.server, 'alice@example.org'),
          (m) => m === null,
        ),
      ).toBeNull();
    }

    // the peers are idle again with nothing left to send
    const view = await waitFor(
      () => replicationView(a!.server),
      (v) => v.peers.every((p) => p.state === 'idle' && p.backlog === 0),
    );
    expect(view.enabled).toBe(true);
    expect(view.peers.map((p) => p.name)).toEqual(['b.test', 'c.test']);
    expect(view.peers.every((p) => p.cursor === 2 && p.lastError === null)).toBe(true);
  }, 20_000);

  it('binds go both ways: B and C replicate to A as well', async () => {
    const [a, b, c] = mesh.replicas;
    await bind(b!.server, 'bob@example.org', '@bob:hs.test');
    await bind(c!.server, 'carol@example.org', '@carol:hs.test');
    await waitFor(
      () => lookup(a!.server, 'bob@example.org'),
      (m) => m === '@bob:hs.test',
    );
    await waitFor(
      () => lookup(a!.server, 'carol@example.org'),
      (m) => m === '@carol:hs.test',
    );
    await waitFor(
      () => lookup(c!.server, 'bob@example.org'),
      (m) => m === '@bob:hs.test',
    );
  }, 20_000);

  it('B stopped while A binds 1,000 more; B started again catches up: nothing lost, nothing twice', async () => {
    const a = mesh.byName('a.test');
    const b = mesh.byName('b.test');
    const c = mesh.byName('c.test');
    await b.stop();

    const N = 1000;
    const addresses = Array.from({ length: N }, (_, i) => `user${i}@bulk.test`);
    // in parallel, a few at a time, as clients would
    for (let i = 0; i < N; i += 50) {
      await Promise.all(addresses.slice(i, i + 50).map((addr, j) => bind(a.server, addr, `@user${i + j}:hs.test`)));
    }
    // C keeps up while B is down: one dead peer does not hold the others
    await waitFor(
      async () => (await globalRows(c.dir, 'a.test')).length,
      (n) => n === N,
      20_000,
    );
    const whileDown = await replicationView(a.server);
    const toB = whileDown.peers.find((p) => p.name === 'b.test')!;
    expect(toB.backlog).toBeGreaterThanOrEqual(N);
    expect(toB.lastError).not.toBeNull();

    await b.restart();
    // end A's backoff now rather than wait for it (up to minutes after many failures)
    await a.server.server.ctx.facades.replication.retry({ name: 'b.test' });
    await waitFor(
      async () => (await globalRows(b.dir, 'a.test')).length,
      (n) => n >= N,
      30_000,
    );

    const rows = await globalRows(b.dir, 'a.test');
    expect(rows).toHaveLength(N); // the earlier bind of alice was unbound: only the 1,000
    expect(new Set(rows.map((r) => r.originId)).size).toBe(N);
    expect(new Set(rows.map((r) => r.address))).toEqual(new Set(addresses));
    expect(await lookup(b.server, 'user999@bulk.test')).toBe('@user999:hs.test');
    const view = await waitFor(
      () => replicationView(a.server),
      (v) => v.peers.every((p) => p.state === 'idle' && p.backlog === 0),
    );
    expect(view.peers.find((p) => p.name === 'b.test')!.nextRetryTs).toBeNull();
  }, 120_000);
});
