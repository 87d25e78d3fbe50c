/**
 * The lookups' read-only connection and its read snapshot (src/store/lookup-connection.ts), on a real SQLite file:
 * reads share one snapshot, a write of this process ends it at once (through the store actor), another process's
 * write is seen once SNAPSHOT_MS have passed, and the connection cannot write.
 */
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lookupHash } from '../src/crypto/hash.js';
import { ASSOCIATION_LIFETIME_MS, AssociationReads } from '../src/store/associations.js';
import { closeDatabase, openDatabase, type SqliteDatabase } from '../src/store/database.js';
import { ensurePepper } from '../src/store/hashing.js';
import { openLookupConnection, ReadSnapshot, SNAPSHOT_MS } from '../src/store/lookup-connection.js';
import { startTestServer } from './helpers/server.js';
import { internal } from './helpers/flows.js';
import { tempDir } from './helpers/tmp.js';

let tmp: ReturnType<typeof tempDir>;
let writer: SqliteDatabase;
let lookups: SqliteDatabase;
let snapshot: ReadSnapshot;
let reads: AssociationReads;
let pepper: string;

beforeEach(() => {
  tmp = tempDir();
  const file = path.join(tmp.dir, 'sydent.db');
  writer = openDatabase(file);
  pepper = ensurePepper(writer, lookupHash);
  lookups = openLookupConnection(file)!;
  snapshot = new ReadSnapshot(lookups);
  reads = new AssociationReads(lookups, snapshot);
});
afterEach(() => {
  closeDatabase(lookups);
  closeDatabase(writer);
  tmp.cleanup();
});

const now = Date.now();

function insert(address: string, mxid: string): string {
  const hash = lookupHash(address, 'email', pepper);
  writer
    .prepare(
      `INSERT INTO global_threepid_associations
       (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
       VALUES ('email', ?, ?, ?, ?, ?, ?, 'peer.example', ?, '{}')`,
    )
    .run(address, hash, mxid, now, now - 1000, now + ASSOCIATION_LIFETIME_MS, Math.floor(Math.random() * 1e9));
  return hash;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('the read snapshot', () => {
  it('reads inside one snapshot do not see a write until it ends; after end() they do', () => {
    const hash = lookupHash('a@example.com', 'email', pepper);
    expect(reads.lookupHashes([hash], now).size).toBe(0);
    expect(lookups.inTransaction).toBe(true);
    insert('a@example.com', '@a:hs.example');
    // Same snapshot: the committed write is not visible yet. This is what the store actor's end() is for.
    expect(reads.lookupHashes([hash], now).size).toBe(0);
    snapshot.end();
    expect(lookups.inTransaction).toBe(false);
    expect(reads.lookupHashes([hash], now).get(hash)).toBe('@a:hs.example');
  });

  it('ends by itself after SNAPSHOT_MS: a write from another connection is seen then, and the WAL is not held', async () => {
    const hash = lookupHash('b@example.com', 'email', pepper);
    expect(reads.lookupHashes([hash], now).size).toBe(0);
    insert('b@example.com', '@b:hs.example');
    await sleep(SNAPSHOT_MS + 1);
    expect(lookups.inTransaction).toBe(false);
    expect(reads.lookupHashes([hash], now).get(hash)).toBe('@b:hs.example');
  });

  it('the lookup connection cannot write', () => {
    expect(() => lookups.prepare('DELETE FROM global_threepid_associations').run()).toThrow(/readonly|query_only/i);
  });

  it('an in-memory database has no lookup connection (a second one would be another database)', () => {
    expect(openLookupConnection(':memory:')).toBeNull();
  });
});

describe('in the server', () => {
  it('a bind through the store is seen by a lookup that follows it at once, while lookups keep a snapshot open', async () => {
    const t = await startTestServer();
    try {
      const associations = t.server.ctx.reads.associations;
      const serverPepper = await associations.pepper();
      const hashes = ['c1', 'c2', 'c3'].map((l) => lookupHash(`${l}@example.com`, 'email', serverPepper));
      for (const [i, hash] of hashes.entries()) {
        // A lookup first: it opens a snapshot that a write must not leave stale.
        expect((await associations.lookupHashes([hash], t.clock.now())).size).toBe(0);
        const bound = await internal(t, 'bind', {
          medium: 'email',
          address: `c${i + 1}@example.com`,
          mxid: `@c${i + 1}:hs.example`,
        });
        expect(bound.status, bound.text).toBe(200);
        // No wait: the store actor ended the snapshot when the bind committed.
        expect((await associations.lookupHashes([hash], t.clock.now())).get(hash)).toBe(`@c${i + 1}:hs.example`);
      }
    } finally {
      await t.close();
    }
  });
});
