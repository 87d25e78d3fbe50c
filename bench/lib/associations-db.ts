/**
 * A sydent.db with a large number of 3PID associations, for the lookup and bind scenarios.
 *
 * Built once per bench process (the first scenario that asks pays, ~10–20 s for 1,000,000 rows) in a temp
 * directory removed when the process exits, then copied to each scenario's database path, so every scenario
 * starts from the same untouched file whatever the one before it wrote.
 *
 * Rows: `count` associations `user<i>@bench.test` (email) → `@user<i>:<serverName>`, i = 1…count, each in both
 * `local_threepid_associations` (id i) and `global_threepid_associations` (originServer = serverName,
 * originId = i, as a bind by this server would leave them), with `lookup_hash` under the stored pepper, valid
 * from now − 1 s for 100 years; plus one account and its access token (no consent version: the bench configures
 * no terms, so nothing is gated).
 */
import { randomBytes } from 'node:crypto';

import type { AutocannonRequest } from 'autocannon';
import pg from 'pg';

import { lookupHash } from '../../src/crypto/hash.js';
import { signJson } from '../../src/crypto/signing.js';
import { ASSOCIATION_LIFETIME_MS } from '../../src/store/associations.js';
import { closeDatabase, openDatabase } from '../../src/store/database.js';
import { ensurePepper } from '../../src/store/hashing.js';
import { LOOKUP_HASHES_SQL } from '../../src/store/pg/reads.js';
import type { CannonSummary } from './cannon.js';
import { buildOnce, copyCached, isBuilt, tableIndexes, valuesSql, type Built } from './db-cache.js';
import { newDatabase, templateDatabase } from './postgres.js';
import type { Extra, Goal, ScenarioContext, ScenarioResult } from './scenario.js';
import { SERVER_NAME, type ConfSections, type SydentProcess } from './sydent.js';

export interface AssociationsDbOptions {
  /** associations to insert; default 1,000,000 */
  count?: number;
  /** the server name in the mxids and originServer; default bench.test (the bench server's own) */
  serverName?: string;
  /**
   * the server's ed25519 seed: each global row's `sgAssoc` is then the association signed with it, as a bind stores
   * it (slower to build); without it, `{}`
   */
  seed?: Uint8Array;
}

export interface AssociationsDb {
  count: number;
  serverName: string;
  /** the lookup pepper stored in the database */
  pepper: string;
  /** a valid v2 access token (`Authorization: Bearer …`) */
  accessToken: string;
  /** the account the token belongs to */
  userId: string;
  /** hashes of associations that exist, spread over the whole table (`SAMPLE_HITS` of them) */
  sampleHits: string[];
  /** the mxid each of `sampleHits` maps to, same order */
  sampleHitMxids: string[];
  /** well-formed sha256 hashes (43 characters of base64url) that match nothing */
  sampleMisses: string[];
  /** how long building took (0 when this scenario got a cached copy), seconds */
  buildS: number;
  /** how long copying the cached file took, seconds */
  copyS: number;
  /** bytes of the database file */
  bytes: number;
}

/** Samples kept for request bodies: enough for a 10,000-hash lookup of half hits, half misses, plus variety. */
export const SAMPLE_HITS = 20_000;
export const SAMPLE_MISSES = 20_000;

export const addressOf = (i: number): string => `user${i}@bench.test`;
export const mxidOf = (i: number, serverName: string): string => `@user${i}:${serverName}`;

const BATCH = 500;

type Info = Omit<AssociationsDb, 'buildS' | 'copyS' | 'bytes'>;

function build(file: string, count: number, serverName: string, seed: Uint8Array | undefined): Info {
  const db = openDatabase(file); // schema and migrations, as the server would create it
  try {
    const pepper = ensurePepper(db, lookupHash);
    // Bulk-load settings for this throwaway build only; the journal goes back to WAL at the end, as openDatabase
    // leaves it (the other pragmas are per connection).
    db.pragma('journal_mode = DELETE');
    db.pragma('synchronous = OFF');
    db.pragma('cache_size = -262144');
    const tables = ['global_threepid_associations', 'local_threepid_associations'];
    // Sorting once per index after the load is much faster than keeping four random-order indexes up to date
    // row by row; they are recreated from their own SQL, so the schema ends up exactly as the migrations made it.
    const indexes = tables.flatMap((t) => tableIndexes(db, t));

    const now = Date.now();
    const ts = now - 1000;
    const notAfter = now + ASSOCIATION_LIFETIME_MS;
    const localSql = (n: number) =>
      `INSERT INTO local_threepid_associations (id, medium, address, lookup_hash, mxid, ts, notBefore, notAfter) VALUES ${valuesSql(n, 8)}`;
    const globalSql = (n: number) =>
      `INSERT INTO global_threepid_associations (id, medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc) VALUES ${valuesSql(n, 11)}`;
    const localBatch = db.prepare(localSql(BATCH));
    const globalBatch = db.prepare(globalSql(BATCH));

    const sampleEvery = Math.max(1, Math.floor(count / SAMPLE_HITS));
    const sampleHits: string[] = [];
    const sampleHitMxids: string[] = [];
    const accessToken = randomBytes(24).toString('hex');
    const userId = `@bench:${serverName}`;

    db.transaction(() => {
      for (const { name } of indexes) db.exec(`DROP INDEX "${name.replace(/"/g, '""')}"`);
      const local: unknown[] = [];
      const global: unknown[] = [];
      const flush = () => {
        const n = local.length / 8;
        if (n === BATCH) {
          localBatch.run(local);
          globalBatch.run(global);
        } else if (n > 0) {
          db.prepare(localSql(n)).run(local);
          db.prepare(globalSql(n)).run(global);
        }
        local.length = 0;
        global.length = 0;
      };
      for (let i = 1; i <= count; i++) {
        const address = addressOf(i);
        const mxid = mxidOf(i, serverName);
        const hash = lookupHash(address, 'email', pepper);
        if (i % sampleEvery === 0 && sampleHits.length < SAMPLE_HITS) {
          sampleHits.push(hash);
          sampleHitMxids.push(mxid);
        }
        // ids 1…count in both tables, originId = the local id: what binds by this server leave behind (and the
        // AUTOINCREMENT counters follow explicit ids, so later binds get count + 1…)
        local.push(i, 'email', address, hash, mxid, ts, ts, notAfter);
        const sgAssoc = seed
          ? JSON.stringify(
              signJson({ medium: 'email', address, mxid, ts, not_before: ts, not_after: notAfter }, serverName, {
                version: '0',
                seed,
              }),
            )
          : '{}';
        global.push(i, 'email', address, hash, mxid, ts, ts, notAfter, serverName, i, sgAssoc);
        if (local.length === BATCH * 8) flush();
      }
      flush();
      for (const { sql } of indexes) db.exec(sql);
      db.prepare('INSERT INTO accounts (user_id, created_ts, consent_version) VALUES (?, ?, NULL)').run(userId, now);
      db.prepare('INSERT INTO tokens (token, user_id) VALUES (?, ?)').run(accessToken, userId);
    })();
    db.pragma('journal_mode = WAL');

    // Misses: the hashes of addresses that are not in the table, so they look like any client's.
    const sampleMisses: string[] = [];
    for (let i = 0; i < SAMPLE_MISSES; i++) sampleMisses.push(lookupHash(`nobody${i}@bench.test`, 'email', pepper));
    return { count, serverName, pepper, accessToken, userId, sampleHits, sampleHitMxids, sampleMisses };
  } finally {
    closeDatabase(db);
  }
}

/** The cache key of a database of `count` associations of `serverName` (signed with `seed`). */
const keyOf = (count: number, serverName: string, seed?: Uint8Array) =>
  `associations-${count}-${serverName}${seed ? `-signed-${Buffer.from(seed).toString('hex').slice(0, 16)}` : ''}`;

/** The cached file of `count` associations (built on the first call of the bench process) and its facts. */
export function associationsFile(opts: AssociationsDbOptions = {}): Promise<Built<Info>> {
  const count = opts.count ?? 1_000_000;
  const serverName = opts.serverName ?? SERVER_NAME;
  return buildOnce(keyOf(count, serverName, opts.seed), (file) => build(file, count, serverName, opts.seed));
}

/**
 * Puts a database of `count` associations at `dbPath` (which must not exist yet): built on the first call of the
 * bench process, copied on later ones. Use as (or in) a scenario's `prepareDb`.
 */
export async function prepareAssociationsDb(dbPath: string, opts: AssociationsDbOptions = {}): Promise<AssociationsDb> {
  const count = opts.count ?? 1_000_000;
  const serverName = opts.serverName ?? SERVER_NAME;
  const fresh = !isBuilt(keyOf(count, serverName, opts.seed));
  const { file, info, buildS } = await associationsFile({ count, serverName, seed: opts.seed });
  const { copyS, bytes } = copyCached(file, dbPath);
  return { ...info, buildS: fresh ? buildS : 0, copyS, bytes };
}

// ---- for the scenarios that use such a database ----

export interface AssociationsServer {
  server: SydentProcess;
  db: AssociationsDb;
  /** `Authorization: Bearer …` and a JSON content type */
  authHeaders: Record<string, string>;
}

/**
 * sydent-ts on a database of `count` associations (1,000,000 by default), built or copied before it starts. On
 * PostgreSQL (`ctx.engine`): a copy of a template database that `migrate-db` loaded once from the cached SQLite
 * file, or, with `pgUrl`, that database as is (a second process on the same database).
 */
export async function startAssociationsServer(
  ctx: ScenarioContext,
  opts: AssociationsDbOptions & { conf?: ConfSections; pgUrl?: string } = {},
): Promise<AssociationsServer> {
  let db: AssociationsDb | undefined;
  const server =
    ctx.engine === 'postgresql'
      ? await ctx.startServer({
          conf: opts.conf,
          pgUrl: opts.pgUrl ?? (await associationsPgDatabase(ctx, opts, (info) => (db = info))),
          startTimeoutMs: 60_000,
        })
      : await ctx.startServer({
          conf: opts.conf,
          prepareDb: async (dbPath) => {
            db = await prepareAssociationsDb(dbPath, opts);
            ctx.log(
              (db.buildS ? `built ${db.count} associations in ${db.buildS.toFixed(1)} s; ` : '') +
                `copied ${(db.bytes / 2 ** 20).toFixed(0)} MiB in ${db.copyS.toFixed(1)} s`,
            );
          },
          startTimeoutMs: 60_000,
        });
  if (!db && opts.pgUrl) {
    const { info } = await associationsFile(opts);
    db = { ...info, buildS: 0, copyS: 0, bytes: 0 };
  }
  if (!db) throw new Error('the associations database was not prepared');
  return {
    server,
    db,
    authHeaders: { authorization: `Bearer ${db.accessToken}`, 'content-type': 'application/json' },
  };
}

/** A new PostgreSQL database holding the associations (dropped when the scenario ends); its URL. */
async function associationsPgDatabase(
  ctx: ScenarioContext,
  opts: AssociationsDbOptions,
  prepared: (db: AssociationsDb) => void,
): Promise<string> {
  const count = opts.count ?? 1_000_000;
  const serverName = opts.serverName ?? SERVER_NAME;
  const fresh = !isBuilt(keyOf(count, serverName));
  const { file, info, buildS } = await associationsFile({ count, serverName });
  const started = performance.now();
  const template = await templateDatabase(keyOf(count, serverName), file);
  const copied = performance.now();
  const pgDb = await newDatabase(template.name);
  ctx.defer(pgDb.drop);
  const copyS = (performance.now() - copied) / 1000;
  ctx.log(
    (fresh ? `built ${count} associations in ${buildS.toFixed(1)} s; ` : '') +
      (copied - started > 1000 ? `migrate-db into PostgreSQL in ${template.migrateS.toFixed(1)} s; ` : '') +
      `database copied from the template in ${copyS.toFixed(1)} s`,
  );
  prepared({ ...info, buildS: fresh ? buildS : 0, copyS, bytes: 0 });
  return pgDb.url;
}

export const V2_LOOKUP_PATH = '/_matrix/identity/v2/lookup';

/** One static v2 lookup request (built once by autocannon, sent as is). */
export function lookupRequest(s: AssociationsServer, hashes: string[]): AutocannonRequest {
  return {
    method: 'POST',
    path: V2_LOOKUP_PATH,
    headers: s.authHeaders,
    body: JSON.stringify({ algorithm: 'sha256', pepper: s.db.pepper, addresses: hashes }),
  };
}

/** `hits` hashes that exist and `misses` that do not, interleaved (hit, miss, hit, …), from sample offsets. */
export function mixedHashes(
  db: AssociationsDb,
  hits: number,
  misses: number,
  offset = 0,
): { hashes: string[]; expected: Map<string, string> } {
  if (offset + hits > db.sampleHits.length || offset + misses > db.sampleMisses.length) {
    throw new Error(`not enough sample hashes for ${hits} hits + ${misses} misses at ${offset}`);
  }
  const hashes: string[] = [];
  const expected = new Map<string, string>();
  for (let i = 0; i < Math.max(hits, misses); i++) {
    if (i < hits) {
      hashes.push(db.sampleHits[offset + i]!);
      expected.set(db.sampleHits[offset + i]!, db.sampleHitMxids[offset + i]!);
    }
    if (i < misses) hashes.push(db.sampleMisses[offset + i]!);
  }
  return { hashes, expected };
}

/** One request outside the measurement: status and parsed JSON body. */
export async function requestJson(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: unknown } = {},
): Promise<{ status: number; body: unknown; ms: number }> {
  const started = performance.now();
  const res = await fetch(url, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers: init.headers,
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  const text = await res.text();
  const ms = performance.now() - started;
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: kept as text for the error message
  }
  return { status: res.status, body, ms };
}

/**
 * Checks a v2 lookup answer before measuring: exactly the expected hash → mxid mappings (misses absent). Throws
 * with what differs. Returns the time the request took, ms.
 */
export async function verifyLookup(
  s: AssociationsServer,
  hashes: string[],
  expected: Map<string, string>,
): Promise<number> {
  const { status, body, ms } = await requestJson(`${s.server.baseUrl}${V2_LOOKUP_PATH}`, {
    headers: s.authHeaders,
    body: { algorithm: 'sha256', pepper: s.db.pepper, addresses: hashes },
  });
  const brief = (v: unknown) => JSON.stringify(v).slice(0, 300);
  if (status !== 200) throw new Error(`lookup check: status ${status}: ${brief(body)}`);
  const mappings = (body as { mappings?: Record<string, unknown> }).mappings;
  if (!mappings || typeof mappings !== 'object') throw new Error(`lookup check: no mappings in ${brief(body)}`);
  const got = Object.entries(mappings);
  if (got.length !== expected.size) throw new Error(`lookup check: ${got.length} mappings, expected ${expected.size}`);
  for (const [hash, mxid] of expected) {
    if (mappings[hash] !== mxid) throw new Error(`lookup check: ${hash} → ${String(mappings[hash])}, expected ${mxid}`);
  }
  return ms;
}

/** Notes for anything but clean 2xx answers. */
export function statusNotes(summary: CannonSummary): string[] {
  const notes: string[] = [];
  if (summary.non2xx > 0) {
    const codes = Object.entries(summary.statusCodes)
      .filter(([code]) => !code.startsWith('2'))
      .map(([code, n]) => `${code} × ${n}`)
      .join(', ');
    notes.push(`${summary.non2xx} non-2xx answers (${codes})`);
  }
  if (summary.errors > 0) notes.push(`${summary.errors} socket errors (${summary.timeouts} timeouts)`);
  return notes;
}

export interface BulkLookupOptions {
  /** hashes per request, half hits, half misses */
  hashes: number;
  /** distinct request bodies (different hashes each), cycled per connection */
  bodies: number;
  /** autocannon connections; default the run's */
  connections?: number;
  /** a median goal to report against, ms */
  goalP50Ms?: number;
}

/** A v2 lookup of many hashes per request against 1,000,000 associations, checked before it is measured. */
export async function measureBulkLookup(ctx: ScenarioContext, opts: BulkLookupOptions): Promise<ScenarioResult> {
  const s = await startAssociationsServer(ctx);
  const hits = opts.hashes / 2;
  const misses = opts.hashes - hits;
  const bodies = Array.from({ length: opts.bodies }, (_, b) =>
    mixedHashes(s.db, hits, misses, b * Math.max(hits, misses)),
  );
  const checkMs: number[] = [];
  for (const { hashes, expected } of bodies) checkMs.push(await verifyLookup(s, hashes, expected));
  const requests = bodies.map(({ hashes }) => lookupRequest(s, hashes));
  const connections = opts.connections ?? ctx.connections;
  const summary = await ctx.measure({ url: s.server.baseUrl, requests, connections });
  const extras: Extra[] = [];
  if (opts.goalP50Ms !== undefined) {
    extras.push({
      label: `**median latency (p50), ${connections} connection${connections === 1 ? '' : 's'}**`,
      value:
        `**${summary.p50} ms** (goal: under ${opts.goalP50Ms} ms: ${summary.p50 < opts.goalP50Ms ? 'met' : 'NOT met'}); ` +
        `mean ${summary.raw.latency.mean.toFixed(1)} ms, p90 ${summary.p90} ms, p99 ${summary.p99} ms`,
    });
  }
  extras.push(
    { label: 'hashes per request', value: `${opts.hashes.toLocaleString('en')} (${hits} hits, ${misses} misses)` },
    { label: 'hashes looked up per second', value: Math.round(summary.rps * opts.hashes).toLocaleString('en') },
    { label: 'connections', value: String(connections) },
    { label: 'request body', value: `${(Buffer.byteLength(requests[0]!.body as string) / 1024).toFixed(0)} KiB` },
    {
      label: 'checks before measuring (cold, one request each)',
      value: checkMs.map((ms) => `${ms.toFixed(0)} ms`).join(', ') + `: exactly the ${hits} expected mappings each`,
    },
    { label: 'associations in the database', value: s.db.count.toLocaleString('en') },
  );
  if (s.server.pgUrl) {
    extras.push({
      label: 'EXPLAIN (ANALYZE, BUFFERS) of the lookup statement on the first body, after the load',
      value: `\`${await explainLookup(s.server.pgUrl, bodies[0]!.hashes)}\``,
    });
  }
  const goals: Goal[] =
    opts.goalP50Ms === undefined
      ? []
      : [
          {
            what: `${opts.hashes.toLocaleString('en')}-hash lookup p50, 1M associations`,
            figure: `${summary.p50} ms`,
            goal: `< ${opts.goalP50Ms} ms`,
            met: summary.p50 < opts.goalP50Ms,
          },
        ];
  return { summary, extras, notes: statusNotes(summary), goals };
}

/** The plan of the v2 lookup's statement (src/store/pg/reads.ts, LOOKUP_HASHES_SQL) for `hashes`, as it ran, line by line. */
async function explainLookup(pgUrl: string, hashes: string[]): Promise<string> {
  const client = new pg.Client({ connectionString: pgUrl });
  await client.connect();
  try {
    const plan = await client.query<{ 'QUERY PLAN': string }>(`EXPLAIN (ANALYZE, BUFFERS) ${LOOKUP_HASHES_SQL}`, [
      hashes,
      Date.now(),
    ]);
    return plan.rows.map((r) => r['QUERY PLAN'].trim().replace(/'\{[^}]*\}'/g, "'{…}'")).join(' / ');
  } finally {
    await client.end();
  }
}
