/**
 * Small reads on PostgreSQL share statements (src/store/pg/read-batch.ts), run here on a real database with the
 * store's own batch statement for hash lookups: what each lookup gets, which statements carry them, what a failed
 * statement does, and the statement's plan over 20,000 associations.
 */
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { ReadBatch, type BatchRow, type ReadBatchOptions } from '../src/store/pg/read-batch.js';
import { loadPgEngine } from '../src/store/pg/load.js';
import type { Cleanups } from './helpers/cleanups.js';
import { connect, testDatabase } from './helpers/postgres.js';

const cleanups: Cleanups = [];
afterAll(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const ROWS = 20_000;

/**
 * What a lookup must get: hN (N ≤ ROWS) maps to @uN:hs from 1,000 to 5,000; h7 was bound again at 3,000, to
 * @new7:hs until 9,000; anything else maps to nothing.
 */
function expected(hashes: readonly string[], now: number): Map<string, string> {
  const out = new Map<string, string>();
  for (const h of hashes) {
    const n = /^h(\d+)$/.exec(h) ? Number(h.slice(1)) : 0;
    if (n === 7 && now >= 3_000 && now < 9_000) out.set(h, '@new7:hs');
    else if (n >= 1 && n <= ROWS && now >= 1_000 && now < 5_000) out.set(h, `@u${n}:hs`);
  }
  return out;
}

let pool: pg.Pool;
let admin: pg.Client;
let batchSql: string;

beforeAll(async () => {
  const db = await testDatabase();
  cleanups.push(db.drop);
  const { preparePgDatabase } = await loadPgEngine();
  await preparePgDatabase(db.url);
  const { createPgPool } = await import('../src/store/pg/pool.js');
  ({ LOOKUP_BATCH_SQL: batchSql } = await import('../src/store/pg/reads.js'));
  pool = createPgPool(db.url, 4);
  cleanups.push(() => pool.end());
  admin = await connect(db.url);
  cleanups.push(() => admin.end());
  await admin.query(`INSERT INTO global_threepid_associations
      (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc, lookup_hash)
    SELECT 'email', 'u' || i || '@x', '@u' || i || ':hs', 1000, 1000, 5000, 'hs', i, '{}', 'h' || i
    FROM generate_series(1, ${ROWS}) AS i`);
  await admin.query(`INSERT INTO global_threepid_associations
      (medium, address, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc, lookup_hash)
    VALUES ('email', 'u7@x', '@new7:hs', 3000, 3000, 9000, 'hs', ${ROWS + 1}, '{}', 'h7')`);
  await admin.query('ANALYZE global_threepid_associations');
});

/** Hash lookups on the test database, through a batch whose statements are recorded (their key counts) and can be held or failed. */
function recordedBatch(opts: ReadBatchOptions): {
  batch: { lookup: (hashes: string[], now: number) => Promise<Map<string, string>> };
  statements: number[];
  hold: () => () => void;
  failNext: () => void;
} {
  const statements: number[] = [];
  let gate: Promise<void> | null = null;
  let fail = false;
  const reads = new ReadBatch<[string, number], BatchRow & { mxid: string }>(async (keys) => {
    statements.push(keys.length);
    if (gate) await gate;
    const text = fail ? batchSql.replace('unnest', 'no_such_function') : batchSql;
    fail = false;
    const values = [keys.map((k) => k[0]), keys.map((k) => k[1])];
    return (await pool.query<BatchRow & { mxid: string }>({ text, values })).rows;
  }, opts);
  const lookup = async (hashes: string[], now: number): Promise<Map<string, string>> => {
    const rows = await reads.read(hashes.map((h) => [h, now]));
    expect(rows).toHaveLength(hashes.length);
    return new Map(hashes.flatMap((h, k) => (rows[k] ? [[h, rows[k].mxid] as const] : [])));
  };
  return {
    batch: { lookup },
    statements,
    hold: () => {
      let release!: () => void;
      gate = new Promise((r) => (release = r));
      return () => {
        gate = null;
        release();
      };
    },
    failNext: () => (fail = true),
  };
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('small lookups on PostgreSQL, several in one statement', () => {
  it('lookups made in one turn go in one statement; each gets the newest mapping valid at its own time', async () => {
    const { batch, statements } = recordedBatch({ maxInFlight: 1, maxKeys: 2_500 });
    const asks: [string[], number][] = [];
    for (let i = 0; i < 60; i++) {
      const now = [500, 2_000, 4_000, 6_000][i % 4]!;
      asks.push(i % 3 === 0 ? [[`h${i + 1}`, 'h7', 'nope'], now] : [[i % 2 ? 'h7' : `h${ROWS - i}`], now]);
    }
    asks.push([['h7', 'h7', 'h8'], 3_500], [[`h${ROWS + 5}`], 2_000]);
    const found = await Promise.all(asks.map(([hashes, now]) => batch.lookup(hashes, now)));
    expect(statements).toEqual([asks.reduce((n, [hashes]) => n + hashes.length, 0)]);
    for (let i = 0; i < asks.length; i++) expect([...found[i]!]).toEqual([...expected(...asks[i]!)]);
    // the same lookup alone gets the same
    expect([...(await batch.lookup(['h7', 'h8'], 3_500))]).toEqual([
      ['h7', '@new7:hs'],
      ['h8', '@u8:hs'],
    ]);
  });

  it('lookups made while the statements allowed are out wait, and go together when one returns', async () => {
    const { batch, statements, hold } = recordedBatch({ maxInFlight: 1, maxKeys: 2_500 });
    const release = hold();
    const first = batch.lookup(['h1'], 2_000);
    await nextTurn();
    const later: Promise<Map<string, string>>[] = [];
    for (let i = 0; i < 30; i++) {
      later.push(batch.lookup([`h${100 + i}`], 2_000 + i));
      await nextTurn();
    }
    expect(statements).toEqual([1]);
    release();
    expect([...(await first)]).toEqual([['h1', '@u1:hs']]);
    const found = await Promise.all(later);
    expect(statements).toEqual([1, 30]);
    found.forEach((f, i) => expect([...f]).toEqual([[`h${100 + i}`, `@u${100 + i}:hs`]]));
  });

  it('a statement takes lookups up to its key limit, whole: a larger lookup goes alone', async () => {
    const { batch, statements } = recordedBatch({ maxInFlight: 10, maxKeys: 10 });
    const small = Array.from({ length: 5 }, (_, i) => [`h${4 * i + 1}`, `h${4 * i + 2}`, `h${4 * i + 3}`, 'x']);
    const large = Array.from({ length: 15 }, (_, i) => `h${1000 + i}`);
    const found = await Promise.all([...small, large].map((hashes) => batch.lookup(hashes, 2_000)));
    expect(statements).toEqual([8, 8, 4, 15]);
    [...small, large].forEach((hashes, i) => expect([...found[i]!]).toEqual([...expected(hashes, 2_000)]));
  });

  it("a failed statement fails each of its lookups with the server's error; the next statement answers", async () => {
    const { batch, statements, failNext } = recordedBatch({ maxInFlight: 1, maxKeys: 2_500 });
    failNext();
    const failed = await Promise.allSettled([batch.lookup(['h1'], 2_000), batch.lookup(['h2', 'h3'], 2_000)]);
    for (const r of failed) {
      expect(r.status).toBe('rejected');
      expect(String((r as PromiseRejectedResult).reason)).toMatch(/no_such_function/);
    }
    expect([...(await batch.lookup(['h2'], 2_000))]).toEqual([['h2', '@u2:hs']]);
    expect(statements).toEqual([3, 1]);
  });

  it('the batch statement probes the index once per hash: a few hundred rows read for 100 hashes, not the table', async () => {
    const hashes = Array.from({ length: 100 }, (_, i) => `h${i * 150 + 1}`);
    const nows = hashes.map((_, i) => 1_000 + i * 50);
    const res = await admin.query<{ 'QUERY PLAN': unknown }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${batchSql}`, [
      hashes,
      nows,
    ]);
    let read = 0;
    const kinds: string[] = [];
    const walk = (node: Record<string, unknown>): void => {
      if (node['Relation Name'] === 'global_threepid_associations') {
        kinds.push(String(node['Node Type']));
        const loops = Number(node['Actual Loops'] ?? 1);
        read += (Number(node['Actual Rows'] ?? 0) + Number(node['Rows Removed by Filter'] ?? 0)) * loops;
      }
      for (const child of (node['Plans'] as Record<string, unknown>[] | undefined) ?? []) walk(child);
    };
    walk((res.rows[0]!['QUERY PLAN'] as { Plan: Record<string, unknown> }[])[0]!.Plan);
    expect(kinds.length).toBeGreaterThan(0);
    expect(kinds).not.toContain('Seq Scan');
    expect(read).toBeLessThan(300);
  });
});
