/**
 * Which binding a hashed lookup answers when a hash has several rows (re-binds, replicated copies), on a real SQLite
 * file: the newest valid one (by ts, ties by row id), the same whether the hash is looked up alone (one probe of the
 * index, newest first) or among many (one json_each query), and the one-hash probe reads the index without sorting.
 */
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { lookupHash } from '../src/crypto/hash.js';
import { AssociationReads, NEWEST_BY_HASH_SQL } from '../src/store/associations.js';
import { closeDatabase, openDatabase, type SqliteDatabase } from '../src/store/database.js';
import { ensurePepper } from '../src/store/hashing.js';
import { HashLookupPool } from '../src/store/lookup-pool.js';
import { spreadMappings } from '../src/store/reads.js';
import { tempDir } from './helpers/tmp.js';

let tmp: ReturnType<typeof tempDir>;
let db: SqliteDatabase;
let reads: AssociationReads;
let pepper: string;
let originId = 0;

beforeEach(() => {
  tmp = tempDir();
  db = openDatabase(path.join(tmp.dir, 'sydent.db'));
  pepper = ensurePepper(db, lookupHash);
  reads = new AssociationReads(db);
});
afterEach(() => {
  closeDatabase(db);
  tmp.cleanup();
});

const NOW = 1_800_000_000_000;
const DAY = 86_400_000;

interface Row {
  mxid: string;
  ts: number;
  notBefore?: number;
  notAfter?: number;
}

/** Inserts the rows of one address in the order given (row ids ascending), returns its hash. */
function bindings(address: string, rows: Row[]): string {
  const hash = lookupHash(address, 'email', pepper);
  const insert = db.prepare(
    `INSERT INTO global_threepid_associations
     (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
     VALUES ('email', ?, ?, ?, ?, ?, ?, 'peer.example', ?, '{}')`,
  );
  for (const r of rows)
    insert.run(address, hash, r.mxid, r.ts, r.notBefore ?? r.ts, r.notAfter ?? r.ts + 100 * DAY, ++originId);
  return hash;
}

/** The answer for each hash looked up alone, and within a lookup of more than eight hashes (the other query). */
function bothWays(hashes: string[]): {
  alone: Record<string, string | undefined>;
  many: Record<string, string | undefined>;
} {
  const alone: Record<string, string | undefined> = {};
  for (const h of hashes) alone[h] = reads.lookupHashes([h], NOW).get(h);
  const padding = Array.from({ length: 9 }, (_, i) => lookupHash(`nobody${i}@example.com`, 'email', pepper));
  const found = reads.lookupHashes([...hashes, ...padding], NOW);
  const many: Record<string, string | undefined> = {};
  for (const h of hashes) many[h] = found.get(h);
  return { alone, many };
}

/**
 * 10,000 hashes to look up at once: 600 addresses bound once (each sent twice), 200 bound three times (the newest
 * wins; each sent three times), 100 whose newest row has expired, and misses, shuffled; and the mappings expected.
 */
function mixedLookup(): { sent: string[]; expected: Map<string, string> } {
  const expected = new Map<string, string>();
  const sent: string[] = [];
  for (let i = 0; i < 600; i++) {
    const hash = bindings(`once${i}@example.com`, [{ mxid: `@once${i}:hs`, ts: NOW - DAY }]);
    expected.set(hash, `@once${i}:hs`);
    sent.push(hash, hash);
  }
  for (let i = 0; i < 200; i++) {
    const hash = bindings(`thrice${i}@example.com`, [
      { mxid: `@mid${i}:hs`, ts: NOW - 2 * DAY },
      { mxid: `@new${i}:hs`, ts: NOW - DAY },
      { mxid: `@old${i}:hs`, ts: NOW - 3 * DAY },
    ]);
    expected.set(hash, `@new${i}:hs`);
    sent.push(hash, hash, hash);
  }
  for (let i = 0; i < 100; i++) {
    const hash = bindings(`lapsed${i}@example.com`, [
      { mxid: `@kept${i}:hs`, ts: NOW - 2 * DAY },
      { mxid: `@lapsed${i}:hs`, ts: NOW - DAY, notAfter: NOW - 1 },
    ]);
    expected.set(hash, `@kept${i}:hs`);
    sent.push(hash);
  }
  let miss = 0;
  while (sent.length < 10_000) sent.push(lookupHash(`nobody${miss++}@example.com`, 'email', pepper));
  // a deterministic shuffle, so hits, repeats and misses are interleaved
  for (let i = sent.length - 1, seed = 11; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [sent[i], sent[j]] = [sent[j]!, sent[i]!];
  }
  return { sent, expected };
}

describe('the binding a hash lookup answers', () => {
  it('is the newest valid row, by ts then row id, alone or among many hashes', () => {
    const cases: Array<[string, Row[], string | undefined]> = [
      // a newer row inserted first: the ts decides, not the insertion order
      [
        'newer-first@example.com',
        [
          { mxid: '@new:hs', ts: NOW - DAY },
          { mxid: '@old:hs', ts: NOW - 2 * DAY },
        ],
        '@new:hs',
      ],
      // equal ts: the later row id wins, whatever the mxids sort as
      [
        'same-ts@example.com',
        [
          { mxid: '@zz-first:hs', ts: NOW - DAY },
          { mxid: '@aa-second:hs', ts: NOW - DAY },
        ],
        '@aa-second:hs',
      ],
      // the newest has expired: the newest of the rest that is still valid
      [
        'expired@example.com',
        [
          { mxid: '@valid:hs', ts: NOW - 3 * DAY },
          { mxid: '@expired:hs', ts: NOW - DAY, notAfter: NOW - 1 },
        ],
        '@valid:hs',
      ],
      // the newest is not valid yet
      [
        'not-yet@example.com',
        [
          { mxid: '@valid:hs', ts: NOW - 3 * DAY },
          { mxid: '@future:hs', ts: NOW - DAY, notBefore: NOW + 1 },
        ],
        '@valid:hs',
      ],
      // validity bounds are inclusive at notBefore and exclusive at notAfter
      [
        'bounds@example.com',
        [
          { mxid: '@starts-now:hs', ts: NOW - 3 * DAY, notBefore: NOW },
          { mxid: '@ends-now:hs', ts: NOW - DAY, notBefore: NOW - DAY, notAfter: NOW },
        ],
        '@starts-now:hs',
      ],
      ['none-valid@example.com', [{ mxid: '@gone:hs', ts: NOW - DAY, notAfter: NOW - 1 }], undefined],
    ];
    const expected: Record<string, string | undefined> = {};
    const hashes = cases.map(([address, rows, mxid]) => {
      const hash = bindings(address, rows);
      expected[hash] = mxid;
      return hash;
    });
    const { alone, many } = bothWays(hashes);
    expect(alone).toEqual(expected);
    expect(many).toEqual(expected);
  });

  it('10,000 hashes at once, hits repeated, misses and several rows per hash mixed, in any order: exactly the newest valid mapping of each hit', () => {
    const { sent, expected } = mixedLookup();
    const found = reads.lookupHashes(sent, NOW);
    expect(found.size).toBe(expected.size);
    expect(new Map([...found].sort())).toEqual(new Map([...expected].sort()));
  });

  it('the same lookup cut into slices for two lookup workers, each on its own connection: the same mappings', async () => {
    const { sent, expected } = mixedLookup();
    const pool = new HashLookupPool(path.join(tmp.dir, 'sydent.db'), 2);
    try {
      await pool.warm();
      expect(pool.readyWorkers()).toHaveLength(2);
      const json = await spreadMappings(reads, pool, sent, NOW);
      const found = new Map(Object.entries(JSON.parse(json.toString()) as Record<string, string>));
      expect(found.size).toBe(expected.size);
      expect(new Map([...found].sort())).toEqual(new Map([...expected].sort()));
      // the hashes in order, as the lookup without workers gives them
      expect([...found.keys()]).toEqual([...reads.lookupHashes(sent, NOW).keys()]);
    } finally {
      await pool.close();
    }
  });

  it("hashes and mxids that JSON must escape come back exactly, from the read connection's slice and the workers'", async () => {
    // Quotes, backslashes, control characters, U+2028, non-ASCII and astral characters, in hashes spread over every
    // slice, and mxids long enough that each slice's answer comes in several pieces.
    const odd = ['"', '\\', '\\"', '\n\t\u0001', '\u2028\u2029', 'é', '日本', '😀', '</script>', "'"];
    const insert = db.prepare(
      `INSERT INTO global_threepid_associations
       (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
       VALUES ('email', ?, ?, ?, ?, ?, ?, 'peer.example', ?, '{}')`,
    );
    const expected = new Map<string, string>();
    const sent: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const mark = i % 100 === 0 ? odd[(i / 100) % odd.length]! : '';
      const hash = `h${String(i).padStart(4, '0')}${mark}`;
      const mxid = `@user${i}${mark}:${'long-server-name.example.'.repeat(3)}${mark}`;
      insert.run(`a${i}@example.com`, hash, mxid, NOW - DAY, NOW - DAY, NOW + DAY, ++originId);
      if (i % 3 !== 0) {
        expected.set(hash, mxid);
        sent.push(hash);
      } else {
        sent.push(`${hash}-missing`);
      }
    }
    sent.reverse();
    const pool = new HashLookupPool(path.join(tmp.dir, 'sydent.db'), 2);
    try {
      await pool.warm();
      const json = await spreadMappings(reads, pool, sent, NOW);
      const inOrder = [...expected].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      expect(JSON.parse(json.toString())).toEqual(Object.fromEntries(inOrder));
      expect(json.toString()).toBe(JSON.stringify(Object.fromEntries(inOrder)));
    } finally {
      await pool.close();
    }
  });

  it('a lookup cut into parts by value for the workers: any hashes, even all the same, give each mapping once, in order', async () => {
    const a = bindings('a@example.com', [{ mxid: '@a:hs', ts: NOW - DAY }]);
    const b = bindings('b@example.com', [{ mxid: '@b:hs', ts: NOW - DAY }]);
    const [first, second] = a < b ? [a, b] : [b, a];
    const pool = new HashLookupPool(path.join(tmp.dir, 'sydent.db'), 3);
    try {
      await pool.warm();
      const answer = async (sent: string[]): Promise<string> =>
        (await spreadMappings(reads, pool, sent, NOW)).toString();
      const mxid = (h: string): string => (h === a ? '@a:hs' : '@b:hs');
      // all the same hash: every part but one is empty
      expect(await answer(Array.from({ length: 1500 }, () => a))).toBe(JSON.stringify({ [a]: '@a:hs' }));
      // two hashes, each many times, and misses around them
      const sent = Array.from({ length: 3000 }, (_, i) => (i % 3 === 0 ? a : i % 3 === 1 ? b : `miss${i % 50}`));
      expect(await answer(sent)).toBe(JSON.stringify({ [first]: mxid(first), [second]: mxid(second) }));
    } finally {
      await pool.close();
    }
  });

  it('a one-hash lookup reads the newest row straight from the covering index: no table rows, no sort', () => {
    const plan = db.prepare(`EXPLAIN QUERY PLAN ${NEWEST_BY_HASH_SQL}`).all('x', NOW, NOW) as Array<{ detail: string }>;
    expect(plan.map((p) => p.detail)).toEqual([
      'SEARCH global_threepid_associations USING COVERING INDEX sydent_ts_global_lookup_hash_newest (lookup_hash=?)',
    ]);
  });
});
