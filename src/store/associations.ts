/**
 * 3PID associations, in Sydent's two tables: `local_threepid_associations` (what this server bound, with
 * tombstones for unbinds: the replication log) and `global_threepid_associations` (what lookups read: ours and
 * those replicated from peers). The newest binding (largest `ts`) of a 3PID wins in every lookup.
 */
import type Database from 'better-sqlite3';
import type { CallbackWrites } from './callbacks.js';
import type { ReadSnapshot } from './lookup-connection.js';
import { addNewestMembers, type JsonMembers } from './mappings-json.js';

/** Sydent's THREEPID_ASSOCIATION_LIFETIME_MS: associations are valid for about 100 years. */
export const ASSOCIATION_LIFETIME_MS = 100 * 365 * 24 * 60 * 60 * 1000;

export interface Association {
  medium: string;
  address: string;
  mxid: string;
  ts: number;
  not_before: number;
  not_after: number;
}

/** An invite stored for a 3PID and not yet delivered to the homeserver that binds it (`invite_tokens`). */
export interface PendingInvite {
  id: number;
  medium: string;
  address: string;
  room_id: string;
  sender: string;
  token: string;
}

export type Signed<T> = T & { signatures: Record<string, Record<string, string>> };

/**
 * A binding as the bind flow (src/bindings/) made it: hashed with the pepper it read, signed with our key, its
 * callback body built. The store only records it, after checking that what the flow saw still holds.
 */
export interface BindRecord {
  medium: string;
  /** normalised: casefolded email, or E.164 digits */
  address: string;
  mxid: string;
  /** `ts` and `not_before` of the signed association */
  ts: number;
  notAfter: number;
  /** `lookup_hash` of this 3PID under `pepperSeen` */
  lookupHash: string;
  /** the pepper the hash was made with: the bind is refused (BindConflictError) if it is not the stored one */
  pepperSeen: string;
  /** our server name (originServer of our global row) */
  originServer: string;
  /** the signed association as lookups and peers see it (JSON text) */
  sgAssoc: string;
  /** the pending invites of this 3PID the flow signed into the callback: exactly these must still be pending */
  inviteIds: number[];
  /** the homeserver callback (onbind), or null when the mxid names no homeserver */
  callback: { destination: string; path: string; body: unknown } | null;
}

/** What a bind flow saw changed before the store recorded it (a pepper rotation, a new invite): it must start over. */
export class BindConflictError extends Error {
  constructor(what: string) {
    super(`the binding was made with stale data (${what}); make it again`);
    this.name = 'BindConflictError';
  }
}

interface GlobalRow {
  mxid: string;
  sgAssoc: string;
  ts: number;
}

/** The newest of a 3PID's rows: largest ts, then largest id (what `ORDER BY ts DESC, id DESC LIMIT 1` gives). */
function newestOf<R extends { ts: number; id: number }>(rows: R[]): R | undefined {
  let best = rows[0];
  for (let i = 1; i < rows.length; i++) {
    const row = rows[i]!;
    if (row.ts > best!.ts || (row.ts === best!.ts && row.id > best!.id)) best = row;
  }
  return best;
}

/** `items` sorted (by UTF-16 code units), each once. */
export function sortedUnique(items: readonly string[]): string[] {
  const out = items.slice().sort();
  let kept = 0;
  for (let i = 0; i < out.length; i++) if (kept === 0 || out[i] !== out[kept - 1]) out[kept++] = out[i]!;
  out.length = kept;
  return out;
}

/** How many items partitionByValue sorts to choose its cut points. */
const CUT_SAMPLE = 128;

/**
 * `items` cut into `n` lists by value: every item of a list sorts (by UTF-16 code units) before every item of the
 * next, so equal items share a list, and the lists in order, each sorted, are `items` sorted. The cut points are
 * spread over a sample, so hashes (uniform) fall into lists of about the same size; any input is cut correctly.
 */
export function partitionByValue(items: readonly string[], n: number): string[][] {
  const sample: string[] = [];
  const step = Math.max(1, Math.floor(items.length / CUT_SAMPLE));
  for (let i = 0; i < items.length; i += step) sample.push(items[i]!);
  sample.sort();
  const cuts: string[] = [];
  for (let j = 1; j < n; j++) cuts.push(sample[Math.floor((j * sample.length) / n)] ?? '');
  const out: string[][] = Array.from({ length: n }, () => []);
  for (const item of items) {
    let k = 0;
    while (k < cuts.length && item >= cuts[k]!) k++;
    out[k]!.push(item);
  }
  return out;
}

/** A valid binding of a hash: lookup_hash, mxid, ts, id. */
export type HashRow = [string, string, number, number];

/**
 * How many hashes one BY_SORTED_HASHES_SQL statement takes: their JSON list stays below V8's large-object size
 * (mappings-json.ts says why that matters).
 */
export const SORTED_SLICE = 2000;

/**
 * The valid rows of many hashes, given sorted and without repeats as one JSON list: json_each is the outer loop (CROSS
 * JOIN keeps it there), so the probes walk the index in its own order and no temporary b-tree is built, neither for
 * an IN list nor for an ORDER BY. A hash's rows come together, from one probe.
 */
export const BY_SORTED_HASHES_SQL = `SELECT g.lookup_hash, g.mxid, g.ts, g.id FROM json_each(?) j
  CROSS JOIN global_threepid_associations g ON g.lookup_hash = j.value
  WHERE g.notBefore <= ? AND g.notAfter > ?`;

/**
 * Adds to `found` the newest (largest ts, then id) of each hash's rows, whatever order a hash's rows come in; the
 * rows of one hash must come together, as BY_SORTED_HASHES_SQL gives them.
 */
export function addNewest(rows: readonly HashRow[], found: Map<string, string>): void {
  let last = '';
  let lastTs = 0;
  let lastId = 0;
  for (const [hash, mxid, ts, id] of rows) {
    if (hash === last && (ts < lastTs || (ts === lastTs && id < lastId))) continue;
    found.set(hash, mxid);
    last = hash;
    lastTs = ts;
    lastId = id;
  }
}

/**
 * The mxid of a hash's newest valid binding, read in the order of its index (sydent_ts_global_lookup_hash_newest:
 * lookup_hash, ts, id, then the validity columns and mxid): no sort, no table row, and SQLite stops at that row.
 */
export const NEWEST_BY_HASH_SQL = `SELECT mxid FROM global_threepid_associations
  WHERE lookup_hash = ? AND notBefore <= ? AND notAfter > ?
  ORDER BY ts DESC, id DESC LIMIT 1`;

export class AssociationReads {
  private readonly newest: Database.Statement<[string, string, number, number], GlobalRow & { id: number }>;
  private readonly byHashes: Database.Statement<[string, number, number], HashRow>;
  private readonly byHash: Database.Statement<[string, number, number], string>;
  private readonly pepperStmt: Database.Statement<[], { lookup_pepper: string }>;
  /** the pepper changes only on rotation: read at most once a second, not on every lookup */
  private pepperCache: { value: string; readAt: number } | null = null;

  /**
   * `snapshot`: on the store's read-only connection, reads share one read transaction for a few milliseconds (see
   * lookup-connection.ts); without one (the store's own reads, an in-memory database) each statement reads alone.
   */
  constructor(
    db: Database.Database,
    private readonly snapshot?: ReadSnapshot,
  ) {
    // The newest row is picked in JS (see newestOf): no temporary b-tree per call for an ORDER BY … LIMIT 1.
    this.newest = db.prepare(
      `SELECT mxid, sgAssoc, ts, id FROM global_threepid_associations
       WHERE medium = ? AND address = ? AND notBefore <= ? AND notAfter > ?`,
    );
    this.byHashes = db.prepare<[string, number, number], HashRow>(BY_SORTED_HASHES_SQL).raw();
    this.byHash = db.prepare<[string, number, number], string>(NEWEST_BY_HASH_SQL).pluck();
    this.pepperStmt = db.prepare('SELECT lookup_pepper FROM hashing_metadata ORDER BY id LIMIT 1');
  }

  /** The pepper as stored right now (writes hash with this, inside their transaction). */
  storedPepper(): string {
    const row = this.pepperStmt.get();
    if (!row) throw new Error('no lookup pepper in the database');
    return row.lookup_pepper;
  }

  pepper(): string {
    const now = Date.now();
    if (this.pepperCache && now - this.pepperCache.readAt < 1000) return this.pepperCache.value;
    this.snapshot?.enter();
    const row = this.pepperStmt.get();
    if (!row) throw new Error('no lookup pepper in the database');
    this.pepperCache = { value: row.lookup_pepper, readAt: now };
    return row.lookup_pepper;
  }

  /** The current binding of a 3PID (normalised address), with its signed JSON. */
  lookup(medium: string, address: string, now: number): GlobalRow | undefined {
    this.snapshot?.enter();
    const row = newestOf(this.newest.all(medium, address, now, now));
    return row && { mxid: row.mxid, sgAssoc: row.sgAssoc, ts: row.ts };
  }

  /**
   * The newest valid binding of each of `sorted` (hashes sorted, each once: see `sortedUnique`), for each slice of
   * SORTED_SLICE hashes in turn: `take` gets that slice's rows, as `addNewest` takes them.
   */
  rowsOfSorted(sorted: readonly string[], now: number, take: (rows: HashRow[]) => void): void {
    this.snapshot?.enter();
    for (let i = 0; i < sorted.length; i += SORTED_SLICE) {
      take(this.byHashes.all(JSON.stringify(sorted.slice(i, i + SORTED_SLICE)), now, now));
    }
  }

  /** Adds to `out` the mapping of each of `sorted` that has one (see rowsOfSorted), in their order. */
  membersOfSorted(sorted: readonly string[], now: number, out: JsonMembers): void {
    this.rowsOfSorted(sorted, now, (rows) => addNewestMembers(rows, out));
  }

  /** hash → mxid of the newest binding, for the hashes that have one. */
  lookupHashes(hashes: readonly string[], now: number): Map<string, string> {
    const found = new Map<string, string>();
    if (hashes.length === 0) return found;
    this.snapshot?.enter();
    // A few hashes: one indexed probe each beats building a json_each table.
    if (hashes.length <= 8) {
      for (const hash of hashes) {
        const mxid = this.byHash.get(hash, now, now);
        if (mxid !== undefined) found.set(hash, mxid);
      }
      return found;
    }
    this.rowsOfSorted(sortedUnique(hashes), now, (rows) => addNewest(rows, found));
    return found;
  }
}

export class AssociationWrites {
  private readonly insertLocal: Database.Statement<
    [string, string, string | null, string | null, number, number | null, number | null]
  >;
  private readonly insertGlobal: Database.Statement<
    [string, string, string, string, number, number, number, string, number, string]
  >;
  private readonly localBinding: Database.Statement<[string, string, string], { id: number }>;
  private readonly deleteGlobal: Database.Statement<[string, string]>;
  private readonly pendingIds: Database.Statement<[string, string], number>;
  private readonly markSent: Database.Statement<[number, string, string]>;
  private readonly reads: AssociationReads;

  constructor(
    private readonly db: Database.Database,
    private readonly callbacks: CallbackWrites,
  ) {
    this.insertLocal = db.prepare(
      `INSERT OR REPLACE INTO local_threepid_associations (medium, address, lookup_hash, mxid, ts, notBefore, notAfter)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.insertGlobal = db.prepare(
      `INSERT OR IGNORE INTO global_threepid_associations
       (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    this.localBinding = db.prepare(
      'SELECT id FROM local_threepid_associations WHERE medium = ? AND address = ? AND mxid = ?',
    );
    this.deleteGlobal = db.prepare('DELETE FROM global_threepid_associations WHERE medium = ? AND address = ?');
    this.pendingIds = db
      .prepare<[string, string], number>(
        'SELECT id FROM invite_tokens WHERE medium = ? AND address = ? AND sent_ts IS NULL',
      )
      .pluck();
    this.markSent = db.prepare(
      'UPDATE invite_tokens SET sent_ts = ? WHERE medium = ? AND address = ? AND sent_ts IS NULL',
    );
    this.reads = new AssociationReads(db);
  }

  /**
   * Records a binding: the local row (the replication log), our global row (what lookups read), the pending invites
   * of this 3PID marked sent, and the homeserver callback, in one transaction; refused with BindConflictError when
   * the pepper or the pending invites are no longer those the flow saw.
   */
  bind(req: BindRecord): void {
    this.db.transaction(() => {
      if (this.reads.storedPepper() !== req.pepperSeen) throw new BindConflictError('the lookup pepper changed');
      const pending = this.pendingIds.all(req.medium, req.address);
      if (!sameIds(pending, req.inviteIds)) throw new BindConflictError('the pending invites changed');
      const localId = Number(
        this.insertLocal.run(req.medium, req.address, req.lookupHash, req.mxid, req.ts, req.ts, req.notAfter)
          .lastInsertRowid,
      );
      this.insertGlobal.run(
        req.medium,
        req.address,
        req.lookupHash,
        req.mxid,
        req.ts,
        req.ts,
        req.notAfter,
        req.originServer,
        localId,
        req.sgAssoc,
      );
      // invite_tokens keeps Sydent's seconds.
      if (pending.length) this.markSent.run(Math.floor(req.ts / 1000), req.medium, req.address);
      if (req.callback) {
        const { destination, path, body } = req.callback;
        this.callbacks.enqueue({ destination, path, body, medium: req.medium, address: req.address, now: req.ts });
      }
    })();
  }

  /**
   * Removes a binding this server made: a tombstone in the local log (replicated to peers) and the 3PID gone from
   * lookups. `false` when (medium, address, mxid) is not bound here (idempotent, as Sydent).
   */
  unbind(medium: string, address: string, mxid: string, now: number): boolean {
    return this.db.transaction(() => {
      if (!this.localBinding.get(medium, address, mxid)) return false;
      this.insertLocal.run(medium, address, null, null, now, null, null);
      this.deleteGlobal.run(medium, address);
      return true;
    })();
  }
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((id) => set.has(id));
}
