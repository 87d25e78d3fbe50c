/**
 * A sydent.db with a large number of validation sessions, as an operator's database holds them after a day of
 * traffic: for the request-token-1m and startup scenarios.
 *
 * Built once per bench process (see db-cache.ts) and copied per scenario. Rows per session, as a requestToken by
 * sydent-ts leaves them (the shapes were read from a real one): `threepid_validation_sessions` (a random distinct
 * sid in 1…2^31, address `s<i>@bench.test`, a random 32-character client secret, mtime spread evenly over the last
 * 24 hours), `threepid_token_auths` (a random 32-character token, send attempt 1) and our `session_machines` row
 * (state `tokenSent`, the machine context as JSON, two transitions of history). One session in four is validated
 * (state `validated`, `validated = 1`, a third transition), as some users finish what they start.
 *
 * Optionally on top of the associations database (associations-db.ts), for start-up with both tables large.
 */
import { randomBytes } from 'node:crypto';

import { ALPHANUMERIC } from '../../src/crypto/random.js';
import { SESSION_MACHINE_VERSION, type SessionContext } from '../../src/machines/validation-session.js';
import { closeDatabase, openDatabase, type SqliteDatabase } from '../../src/store/database.js';
import { ensurePepper } from '../../src/store/hashing.js';
import { lookupHash } from '../../src/crypto/hash.js';
import { associationsFile } from './associations-db.js';
import { buildOnce, copyCached, isBuilt, tableIndexes, valuesSql } from './db-cache.js';

export interface SessionsDbOptions {
  /** sessions to insert; default 1,000,000 */
  count?: number;
  /** associations under them (0: none, the default; else the associations database of that size) */
  associations?: number;
}

/** An existing session, to check that requestToken finds it among the others. */
export interface SampleSession {
  sid: number;
  address: string;
  clientSecret: string;
  sendAttempt: number;
}

export interface SessionsDb {
  count: number;
  associations: number;
  /** sessions spread over the table, not validated (requestToken with the same send_attempt answers their sid) */
  samples: SampleSession[];
  /** how long building took (0 when this scenario got a cached copy), seconds */
  buildS: number;
  copyS: number;
  bytes: number;
}

const SAMPLES = 16;
const DAY_MS = 24 * 60 * 60 * 1000;
const HOUR_MS = 60 * 60 * 1000;
const BATCH = 500;
const MAX_SID = 2 ** 31;

export const sessionAddressOf = (i: number): string => `s${i}@bench.test`;

type Info = Pick<SessionsDb, 'count' | 'associations' | 'samples'>;

/** Inserts `count` sessions (three rows each) into an open database, in one transaction. */
export function insertSessions(db: SqliteDatabase, count: number, now = Date.now()): SampleSession[] {
  const tables = ['threepid_validation_sessions', 'threepid_token_auths', 'session_machines'];
  // as associations-db.ts does: sort once per index after the load, recreated from their own SQL
  const indexes = tables.flatMap((t) => tableIndexes(db, t));
  const cols = { sessions: 6, tokens: 3, machines: 7 };
  const sql = (n: number) => ({
    sessions: `INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES ${valuesSql(n, cols.sessions)}`,
    tokens: `INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) VALUES ${valuesSql(n, cols.tokens)}`,
    machines: `INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts) VALUES ${valuesSql(n, cols.machines)}`,
  });
  const full = Object.fromEntries(Object.entries(sql(BATCH)).map(([k, v]) => [k, db.prepare(v)])) as Record<
    keyof typeof cols,
    ReturnType<SqliteDatabase['prepare']>
  >;

  // Rows go in in sid order (the rowid of both Sydent tables: random-order inserts into a million-row b-tree take
  // minutes), while each sid gets a random place in time, so the mtime index points all over the table as it does
  // in a real one.
  const sids = distinctSids(count);
  const placeOf = shuffled(count);
  const random = new RandomText();
  const samples: SampleSession[] = [];
  const sampleEvery = Math.max(1, Math.floor(count / SAMPLES));
  const rows = { sessions: [] as unknown[], tokens: [] as unknown[], machines: [] as unknown[] };
  const flush = () => {
    const n = rows.sessions.length / cols.sessions;
    if (n === 0) return;
    const stmts =
      n === BATCH
        ? full
        : (Object.fromEntries(Object.entries(sql(n)).map(([k, v]) => [k, db.prepare(v)])) as typeof full);
    for (const k of Object.keys(cols) as Array<keyof typeof cols>) {
      stmts[k].run(rows[k]);
      rows[k].length = 0;
    }
  };

  db.transaction(() => {
    for (const { name } of indexes) db.exec(`DROP INDEX "${name.replace(/"/g, '""')}"`);
    for (let k = 0; k < count; k++) {
      const sid = sids[k]!;
      const i = placeOf[k]! + 1;
      const address = sessionAddressOf(i);
      const clientSecret = random.base64url(24);
      const token = random.alphanumeric(32);
      // oldest first, the newest a second ago: a day of traffic at an even rate
      const mtime = now - 1000 - Math.floor(((count - i) / count) * (DAY_MS - 2000));
      const validated = i % 4 === 0;
      const context: SessionContext = {
        sid: String(sid),
        medium: 'email',
        address,
        sendTo: address,
        clientSecret,
        token,
        wrongTokens: 0,
        sendAttempt: 1,
        mtime,
        nextLink: null,
        brand: null,
        ipAddress: '127.0.0.1',
        everSent: true,
        validatedAt: validated ? mtime : null,
        mxid: null,
        createdBySydent: false,
        rejection: null,
        lastError: null,
      };
      // a validated session's mtime is its validation, a minute after the mail
      const requested = validated ? mtime - 60_000 : mtime;
      const history = [
        { at: requested, event: 'REQUEST_TOKEN', from: 'requested', to: 'sendingToken' },
        { at: requested + 200, event: 'done: sendToken', from: 'sendingToken', to: 'tokenSent' },
        ...(validated ? [{ at: mtime, event: 'SUBMIT_TOKEN', from: 'tokenSent', to: 'validated' }] : []),
      ];
      rows.sessions.push(sid, 'email', address, clientSecret, validated ? 1 : 0, mtime);
      rows.tokens.push(sid, token, 1);
      rows.machines.push(
        sid,
        validated ? 'validated' : 'tokenSent',
        JSON.stringify(context),
        SESSION_MACHINE_VERSION,
        validated ? 3 : 2,
        JSON.stringify(history),
        history.at(-1)!.at,
      );
      // not from the oldest hour: those expire while the run goes on, and an expired session is mailed a new token
      if (!validated && i % sampleEvery === 1 && mtime > now - DAY_MS + HOUR_MS && samples.length < SAMPLES)
        samples.push({ sid, address, clientSecret, sendAttempt: 1 });
      if (rows.sessions.length === BATCH * cols.sessions) flush();
    }
    flush();
    for (const { sql: create } of indexes) db.exec(create);
  })();
  return samples;
}

/** `count` distinct random sids in 1…2^31 − 1, ascending. */
function distinctSids(count: number): Uint32Array {
  const seen = new Set<number>();
  while (seen.size < count) {
    const words = new Uint32Array(randomBytes(4 * (count - seen.size)).buffer);
    for (const w of words) {
      const sid = w % MAX_SID;
      if (sid !== 0) seen.add(sid);
    }
  }
  return Uint32Array.from(seen).sort();
}

/** 0…count − 1 in a random order (Fisher–Yates). */
function shuffled(count: number): Uint32Array {
  const out = Uint32Array.from({ length: count }, (_, i) => i);
  for (let i = count - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Random secrets for test data, cut from large random buffers (node:crypto's per-call cost adds minutes at 1M). */
class RandomText {
  private pool = Buffer.alloc(0);
  private at = 0;

  private take(n: number): Buffer {
    if (this.at + n > this.pool.length) {
      this.pool = randomBytes(1 << 20);
      this.at = 0;
    }
    this.at += n;
    return this.pool.subarray(this.at - n, this.at);
  }

  base64url(bytes: number): string {
    return this.take(bytes).toString('base64url');
  }

  /** (a slight modulo bias: test data) */
  alphanumeric(length: number): string {
    let out = '';
    for (const b of this.take(length)) out += ALPHANUMERIC[b % ALPHANUMERIC.length];
    return out;
  }
}

function build(file: string, count: number, baseFile: string | null): Info {
  // on a copy of the associations database when asked, else a new one; openDatabase applies the migrations
  if (baseFile) copyCached(baseFile, file);
  const db = openDatabase(file);
  try {
    ensurePepper(db, lookupHash);
    db.pragma('journal_mode = DELETE');
    db.pragma('synchronous = OFF');
    db.pragma('cache_size = -262144');
    const samples = insertSessions(db, count);
    db.pragma('journal_mode = WAL');
    return { count, associations: 0, samples };
  } finally {
    closeDatabase(db);
  }
}

const keyOf = (count: number, associations: number) => `sessions-${count}-associations-${associations}`;

/**
 * Puts a database of `count` sessions (and `associations` associations) at `dbPath`, which must not exist yet:
 * built on the first call of the bench process, copied on later ones. Use as (or in) a scenario's `prepareDb`.
 */
export async function prepareSessionsDb(dbPath: string, opts: SessionsDbOptions = {}): Promise<SessionsDb> {
  const count = opts.count ?? 1_000_000;
  const associations = opts.associations ?? 0;
  const key = keyOf(count, associations);
  const fresh = !isBuilt(key);
  const { file, info, buildS } = await buildOnce(key, async (out) => {
    const base = associations > 0 ? (await associationsFile({ count: associations })).file : null;
    return { ...build(out, count, base), associations };
  });
  const { copyS, bytes } = copyCached(file, dbPath);
  return { ...info, buildS: fresh ? buildS : 0, copyS, bytes };
}
