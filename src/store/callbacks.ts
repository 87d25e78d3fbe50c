/**
 * The homeserver callback outbox (`callback_outbox`): one row per onbind notification, written in the bind's
 * transaction, worked off by the notifier.
 *
 * A row's `state` follows the callback machine (src/machines/callback.ts): `pending` (never tried), `delivering`
 * (claimed by a worker until `claimed_until`), `retrying` (due again at `next_attempt_ts`), `delivered`,
 * `abandoned`. A worker claims rows atomically before it works on them; a claim is only a lease, so rows a
 * killed process left in `delivering` become due again once their `claimed_until` has passed, on this node or
 * another. Every write after the claim names the claim (`id` and `claimed_until`), so a worker whose lease ran
 * out cannot overwrite what the next one recorded. Delivery is at least once.
 */
import type Database from 'better-sqlite3';

export interface CallbackEnqueue {
  /** the homeserver's server name (the mxid's domain) */
  destination: string;
  /** e.g. `/_matrix/federation/v1/3pid/onbind` */
  path: string;
  /** the JSON body to POST */
  body: unknown;
  medium: string;
  address: string;
  now: number;
}

type CallbackRowState = 'pending' | 'delivering' | 'retrying' | 'delivered' | 'abandoned';

/** A row a worker has claimed: everything needed to deliver it. */
export interface ClaimedCallback {
  id: number;
  destination: string;
  path: string;
  /** the JSON text to POST */
  body: string;
  medium: string;
  address: string;
  /** failed attempts so far */
  attempts: number;
  nextAttemptTs: number;
  lastError: string | null;
  createdTs: number;
  /** the lease: the claim is this worker's until then, and later writes name it */
  claimedUntil: number;
}

export interface ClaimRequest {
  now: number;
  /** the lease's end */
  claimedUntil: number;
  limit: number;
  /** destinations this worker is already delivering to: one at a time each, so a dead one holds one slot */
  excludeDestinations: string[];
}

/** What the debug endpoint shows of a row: never its body, nor the 3PID. */
export interface CallbackDebugRow {
  id: number;
  destination: string;
  state: CallbackRowState;
  attempts: number;
  nextAttemptTs: number;
  claimedUntil: number | null;
  lastError: string | null;
  createdTs: number;
  deliveredTs: number | null;
}

export type CallbackCounts = Record<CallbackRowState, number>;

/** How long delivered rows are kept (for the debug endpoint), and abandoned ones (for an operator to notice). */
export const DELIVERED_RETENTION_MS = 24 * 60 * 60 * 1000;
export const ABANDONED_RETENTION_MS = 7 * 24 * 60 * 60 * 1000;

/**
 * `T` with its camelCase keys as the table's snake_case column names (`nextAttemptTs` → `next_attempt_ts`). A field
 * renamed in `T` renames the column the row type expects: the SQL that reads the row is not checked against it.
 */
type ColumnsOf<T> = { [K in keyof T & string as SnakeCase<K>]: T[K] };
type SnakeCase<S extends string> = S extends `${infer C}${infer Rest}`
  ? `${C extends Lowercase<C> ? C : `_${Lowercase<C>}`}${SnakeCase<Rest>}`
  : S;

/** A claimed outbox row as both engines read it. */
export type ClaimedRow = ColumnsOf<ClaimedCallback>;

export type DebugRow = ColumnsOf<CallbackDebugRow>;

/** Rows a worker may take: due and unclaimed, or claimed by someone whose lease has run out. */
const claimable = (t: string) => `((${t}.state IN ('pending', 'retrying') AND ${t}.next_attempt_ts <= @now)
  OR ${t}.state = 'delivering') AND (${t}.claimed_until IS NULL OR ${t}.claimed_until < @now)`;

/**
 * The rows not finished yet, as the partial index of migration 13 (`sydent_ts_callback_open`, on destination, then
 * due time and id) names them: a statement must repeat this term as it is for SQLite to use that index.
 */
const OPEN = `state IN ('pending', 'retrying', 'delivering')`;

/**
 * The destinations with rows not finished yet, one index probe each (`destination > previous`), so their number,
 * not the number of rows waiting for them, is what walking them costs. Every destination is text, and no text sorts
 * before the empty one.
 */
const OPEN_DESTINATIONS = `WITH RECURSIVE open_destinations (destination) AS (
    SELECT (SELECT destination FROM callback_outbox INDEXED BY sydent_ts_callback_open
            WHERE ${OPEN} AND destination >= '' ORDER BY destination LIMIT 1)
    UNION ALL
    SELECT (SELECT destination FROM callback_outbox INDEXED BY sydent_ts_callback_open
            WHERE ${OPEN} AND destination > o.destination ORDER BY destination LIMIT 1)
    FROM open_destinations o WHERE o.destination IS NOT NULL
  )`;

/**
 * The claim: of each destination the worker is not busy with, its most overdue claimable row, found by walking that
 * destination's open rows in due order from the first (all claimable rows are due: a row is claimed once due, and its
 * lease ends after that); of those, the most overdue `limit`. The backlog of a destination that refuses its callbacks
 * is never read: a busy destination is left out before its rows are looked at, and one that is backing off stops the
 * walk at its first row. One statement, so the rows are chosen and marked at once and two workers never take the same.
 * The limit is a subquery, not a bare parameter: SQLite (built with STAT4) compiles a statement again each time a
 * parameter its planner may look at is bound, as a bare LIMIT parameter is, and compiling this one costs far more than
 * running it.
 */
export const CALLBACK_CLAIM_SQL = `UPDATE callback_outbox SET state = 'delivering', claimed_until = @claimedUntil
  WHERE id IN (
    ${OPEN_DESTINATIONS}
    SELECT c.id FROM open_destinations o JOIN callback_outbox c ON c.id = (
      SELECT f.id FROM callback_outbox f
      WHERE f.destination = o.destination AND f.${OPEN} AND f.next_attempt_ts <= @now AND ${claimable('f')}
      ORDER BY f.next_attempt_ts, f.id LIMIT 1
    )
    WHERE o.destination IS NOT NULL AND o.destination NOT IN (SELECT value FROM json_each(@exclude))
    ORDER BY c.next_attempt_ts, c.id LIMIT (SELECT @limit)
  )
  RETURNING id, destination, path, body, medium, address, attempts, next_attempt_ts, last_error, created_ts, claimed_until`;

/**
 * When the next row becomes claimable, of the destinations the worker is not busy with: per destination, the due time
 * of its first waiting row or the end of its earliest lease, each one index probe. A waiting row (pending, retrying)
 * holds no lease: every statement that moves a row out of 'delivering' clears its `claimed_until`.
 */
export const CALLBACK_NEXT_DUE_SQL = `${OPEN_DESTINATIONS}
  SELECT min(min(coalesce(waiting, leased), coalesce(leased, waiting))) AS due FROM (
    SELECT
      (SELECT f.next_attempt_ts FROM callback_outbox f
       WHERE f.destination = o.destination AND f.${OPEN} AND f.state <> 'delivering'
       ORDER BY f.next_attempt_ts LIMIT 1) AS waiting,
      (SELECT min(l.claimed_until) FROM callback_outbox l
       WHERE l.destination = o.destination AND l.state = 'delivering') AS leased
    FROM open_destinations o
    WHERE o.destination IS NOT NULL AND o.destination NOT IN (SELECT value FROM json_each(?))
  )`;

export class CallbackReads {
  private readonly countStmt: Database.Statement<[], { state: CallbackRowState; n: number }>;
  private readonly openStmt: Database.Statement<[number], DebugRow>;
  private readonly finishedStmt: Database.Statement<[number], DebugRow>;
  private readonly nextDueStmt: Database.Statement<[string], { due: number | null }>;
  private readonly byIdStmt: Database.Statement<[number], DebugRow>;

  constructor(db: Database.Database) {
    // Kept by triggers as rows change (migration 12): a few rows to read, whatever the size of the outbox.
    this.countStmt = db.prepare('SELECT state, n FROM sydent_ts_callback_counts');
    // Undelivered first (what an operator looks for), oldest first; then the latest delivered ones. Each found
    // through the state index, so the page costs what it shows, not the size of the outbox.
    this.openStmt = db.prepare(
      `SELECT id, destination, state, attempts, next_attempt_ts, claimed_until, last_error, created_ts, delivered_ts
       FROM callback_outbox WHERE state IN ('pending', 'delivering', 'retrying') ORDER BY id LIMIT ?`,
    );
    this.finishedStmt = db.prepare(
      `SELECT id, destination, state, attempts, next_attempt_ts, claimed_until, last_error, created_ts, delivered_ts
       FROM callback_outbox WHERE state IN ('delivered', 'abandoned') ORDER BY id DESC LIMIT ?`,
    );
    this.nextDueStmt = db.prepare(CALLBACK_NEXT_DUE_SQL);
    this.byIdStmt = db.prepare(
      `SELECT id, destination, state, attempts, next_attempt_ts, claimed_until, last_error, created_ts, delivered_ts
       FROM callback_outbox WHERE id = ?`,
    );
  }

  counts(): CallbackCounts {
    const out: CallbackCounts = { pending: 0, delivering: 0, retrying: 0, delivered: 0, abandoned: 0 };
    for (const { state, n } of this.countStmt.all()) out[state] = n;
    return out;
  }

  /** Rows not yet delivered (pending, delivering, retrying). */
  pendingCount(): number {
    const c = this.counts();
    return c.pending + c.delivering + c.retrying;
  }

  /** The outbox for the debug endpoint: state, attempts, next attempt, last error and destination; no bodies. */
  list(limit = 100): CallbackDebugRow[] {
    const open = this.openStmt.all(limit);
    const finished = open.length < limit ? this.finishedStmt.all(limit - open.length) : [];
    return [...open, ...finished].map(toDebugRow);
  }

  byId(id: number): CallbackDebugRow | undefined {
    const row = this.byIdStmt.get(id);
    return row && toDebugRow(row);
  }

  /**
   * When a row next becomes claimable (ms; possibly in the past), leaving out destinations the worker is busy
   * with; null when nothing is waiting.
   */
  nextDue(excludeDestinations: readonly string[] = []): number | null {
    return this.nextDueStmt.get(JSON.stringify(excludeDestinations))?.due ?? null;
  }
}

export const toDebugRow = (r: DebugRow): CallbackDebugRow => ({
  id: r.id,
  destination: r.destination,
  state: r.state,
  attempts: r.attempts,
  nextAttemptTs: r.next_attempt_ts,
  claimedUntil: r.claimed_until,
  lastError: r.last_error,
  createdTs: r.created_ts,
  deliveredTs: r.delivered_ts,
});

/** Writes: run only inside the store actor (enqueue also inside the bind's transaction). */
export class CallbackWrites {
  private readonly insert: Database.Statement<[string, string, string, string, string, number, number]>;
  private readonly claimStmt: Database.Statement<
    { now: number; claimedUntil: number; limit: number; exclude: string },
    ClaimedRow
  >;
  private readonly deliveredStmt: Database.Statement<[number, number], { medium: string; address: string }>;
  private readonly deleteTokens: Database.Statement<[string, string]>;
  private readonly retryStmt: Database.Statement<[number, string, number, number]>;
  private readonly abandonStmt: Database.Statement<[string, number, number]>;
  private readonly releaseStmt: Database.Statement<[number, number]>;
  private readonly purgeDelivered: Database.Statement<[number]>;
  private readonly purgeAbandoned: Database.Statement<[number]>;

  constructor(private readonly db: Database.Database) {
    this.insert = db.prepare(
      `INSERT INTO callback_outbox (destination, path, body, medium, address, next_attempt_ts, created_ts)
       VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.claimStmt = db.prepare(CALLBACK_CLAIM_SQL);
    // Delivered wins whoever holds the claim: the homeserver has the callback, whatever else happens to the row.
    this.deliveredStmt = db.prepare(
      `UPDATE callback_outbox SET state = 'delivered', delivered_ts = ?, claimed_until = NULL, last_error = NULL
       WHERE id = ? AND state NOT IN ('delivered', 'abandoned')
       RETURNING medium, address`,
    );
    this.deleteTokens = db.prepare('DELETE FROM invite_tokens WHERE medium = ? AND address = ?');
    this.retryStmt = db.prepare(
      `UPDATE callback_outbox SET state = 'retrying', attempts = attempts + 1, next_attempt_ts = ?, last_error = ?,
         claimed_until = NULL
       WHERE id = ? AND state = 'delivering' AND claimed_until = ?`,
    );
    this.abandonStmt = db.prepare(
      `UPDATE callback_outbox SET state = 'abandoned', last_error = ?, claimed_until = NULL
       WHERE id = ? AND state = 'delivering' AND claimed_until = ?`,
    );
    this.releaseStmt = db.prepare(
      `UPDATE callback_outbox SET state = CASE WHEN attempts = 0 THEN 'pending' ELSE 'retrying' END, claimed_until = NULL
       WHERE id = ? AND state = 'delivering' AND claimed_until = ?`,
    );
    this.purgeDelivered = db.prepare(`DELETE FROM callback_outbox WHERE state = 'delivered' AND delivered_ts < ?`);
    this.purgeAbandoned = db.prepare(`DELETE FROM callback_outbox WHERE state = 'abandoned' AND created_ts < ?`);
  }

  /** Records a callback, due at once. Call inside the transaction that made it necessary. */
  enqueue(c: CallbackEnqueue): number {
    return Number(
      this.insert.run(c.destination, c.path, JSON.stringify(c.body), c.medium, c.address, c.now, c.now).lastInsertRowid,
    );
  }

  /** Claims up to `limit` due rows (one per destination) until `claimedUntil`. */
  claim(req: ClaimRequest): ClaimedCallback[] {
    if (req.limit <= 0) return [];
    const rows = this.claimStmt.all({
      now: req.now,
      claimedUntil: req.claimedUntil,
      limit: req.limit,
      exclude: JSON.stringify(req.excludeDestinations),
    });
    return claimedCallbacksOf(rows);
  }

  /**
   * The homeserver answered 200. With `deleteInviteTokens` (`[general] delete_tokens_on_bind`), the 3PID's invite
   * tokens go in the same transaction. `updated` is false when the row was already finished (nothing changes).
   */
  delivered(id: number, now: number, deleteInviteTokens: boolean): { updated: boolean; tokensDeleted: number } {
    return this.db.transaction(() => {
      const row = this.deliveredStmt.get(now, id);
      if (!row) return { updated: false, tokensDeleted: 0 };
      const tokensDeleted = deleteInviteTokens ? this.deleteTokens.run(row.medium, row.address).changes : 0;
      return { updated: true, tokensDeleted };
    })();
  }

  /** The attempt failed: one more failure, due again at `nextAttemptTs`. False when the claim was lost. */
  retry(id: number, claimedUntil: number, nextAttemptTs: number, lastError: string): boolean {
    return this.retryStmt.run(nextAttemptTs, lastError.slice(0, 1000), id, claimedUntil).changes === 1;
  }

  /** The callback can never succeed. False when the claim was lost. */
  abandon(id: number, claimedUntil: number, lastError: string): boolean {
    return this.abandonStmt.run(lastError.slice(0, 1000), id, claimedUntil).changes === 1;
  }

  /** Gives a claimed row back untried (shutdown): due again at once, for any worker. */
  release(id: number, claimedUntil: number): boolean {
    return this.releaseStmt.run(id, claimedUntil).changes === 1;
  }

  /** Deletes delivered rows after a day and abandoned ones after a week; returns how many went. */
  purge(now: number): number {
    return this.db.transaction(
      () =>
        this.purgeDelivered.run(now - DELIVERED_RETENTION_MS).changes +
        this.purgeAbandoned.run(now - ABANDONED_RETENTION_MS).changes,
    )();
  }
}

/** Claimed rows as the notifier takes them: soonest due first, then by id. */
export function claimedCallbacksOf(rows: readonly ClaimedRow[]): ClaimedCallback[] {
  return rows
    .map((r) => ({
      id: r.id,
      destination: r.destination,
      path: r.path,
      body: r.body,
      medium: r.medium,
      address: r.address,
      attempts: r.attempts,
      nextAttemptTs: r.next_attempt_ts,
      lastError: r.last_error,
      createdTs: r.created_ts,
      claimedUntil: r.claimed_until,
    }))
    .sort((a, b) => a.nextAttemptTs - b.nextAttemptTs || a.id - b.id);
}
