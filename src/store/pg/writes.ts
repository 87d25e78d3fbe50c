/**
 * The store's writes on PostgreSQL: the same operations and checks as the SQLite table modules (src/store/*.ts),
 * each in a transaction of its own, safe with several nodes writing at once:
 *
 * - a session row is locked (`FOR UPDATE`) while its save checks Sydent's columns, and the machine row's version is
 *   checked by the UPDATE itself: of two concurrent saves from the same version, one wins and the other gets
 *   SessionConflictError (the caller re-reads and re-applies);
 * - the replication log (`local_threepid_associations`) takes its ids in commit order: a pusher reads `id > cursor`,
 *   so an id that became visible after a larger one would never be sent. Every append takes the log's advisory lock
 *   before its id is drawn and holds it to its commit, so appends commit one by one in id order. What needs no order
 *   (the pepper and invite checks, the callback, the session) is done before the lock, and the lock, the append and
 *   the global row are one statement, so the lock is held for that statement and the commit only;
 * - callback claims take rows with `FOR UPDATE SKIP LOCKED`, so two nodes never claim the same row;
 * - what other nodes must act on is NOTIFYed in the same transaction, so they hear of it at its commit (coordinator.ts);
 * - the state counts of migration 12 are written at the end of each transaction, or last in a write that is one
 *   statement (counts.ts);
 * - the writes requests make most are one named statement each: one round trip, planned once per connection.
 */
import type pg from 'pg';

import { BindConflictError, type BindRecord } from '../associations.js';
import type { TokenCache } from '../accounts.js';
import {
  ABANDONED_RETENTION_MS,
  DELIVERED_RETENTION_MS,
  claimedCallbacksOf,
  type CallbackEnqueue,
  type ClaimedRow,
} from '../callbacks.js';
import type { StoreWriteOps, WriteRequest } from '../engine.js';
import { globalRowOf, inOriginOrder, type ApplyPushResult } from '../peers.js';
import {
  sameSydentColumns,
  sydentColumnsOf,
  SessionConflictError,
  SidTakenError,
  type SessionWrite,
  type SydentColumns,
} from '../sessions.js';
import { notifyCall, notifySql, type PgCoordinator } from './coordinator.js';
import { CountDeltas, movedCountsCte } from './counts.js';
import { inTransaction, oneStatement, type CommitWith, type Sql } from './pool.js';
import type { PgRateBuckets } from './rate-buckets.js';
import { PEPPER_SQL, PG_OPEN, PG_OPEN_DESTINATIONS } from './reads.js';

/** Any fixed number, the same in every sydent-ts: held by each append to the replication log until its commit. */
const LOG_APPEND_LOCK = 0x5359_4c47; // "SYLG"
const HISTORY_LIMIT = 20;

const historyJson = (history: SessionWrite['history']): string => JSON.stringify(history.slice(-HISTORY_LIMIT));

/**
 * The pepper a write's hashes must have been made with, its row share-locked until the write commits: a rotation
 * (rotatePgPepper) waits for the write, and re-hashes what it stored.
 */
async function storedPepper(sql: Sql): Promise<string | undefined> {
  return (await sql.query<{ lookup_pepper: string }>(`${PEPPER_SQL} FOR SHARE`)).rows[0]?.lookup_pepper;
}

const INSERT_MACHINE =
  'INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts) VALUES ($1, $2, $3, $4, 1, $5, $6)';
const machineValues = (w: SessionWrite): unknown[] => [
  w.sid,
  w.state,
  w.context,
  w.machineVersion,
  historyJson(w.history),
  w.now,
];

async function insertMachine(sql: Sql, w: SessionWrite, counts: CountDeltas): Promise<void> {
  await sql.query(INSERT_MACHINE, machineValues(w));
  counts.machine(w.state, 1);
}

/** Whether `error` is a unique violation on `table` (a row with that key is there, or being written). */
function isDuplicateOf(error: unknown, table: string): boolean {
  const e = error as { code?: unknown; table?: unknown } | null;
  return e?.code === '23505' && e.table === table;
}

async function saveSession(
  sql: Sql,
  w: SessionWrite,
  expectedVersion: number | null,
  counts: CountDeltas,
): Promise<number> {
  // The session row is locked until commit: saves of one session from several nodes run one after the other.
  const current = (
    await sql.query<SydentColumns>(
      `SELECT s.validated, s.mtime, t.token, t.sendAttemptNumber AS "sendAttemptNumber"
       FROM threepid_validation_sessions s
       LEFT JOIN threepid_token_auths t ON t.validationSession = s.id
       WHERE s.id = $1 ORDER BY t.id DESC LIMIT 1 FOR UPDATE OF s`,
      [w.sid],
    )
  ).rows[0];
  // Gone (swept since it was read: the lock waited for the sweep) or changed: the caller reads the row again.
  if (!current || (w.expectedSydent && !sameSydentColumns(current, w.expectedSydent)))
    throw new SessionConflictError(w.sid);
  if (expectedVersion === null) {
    const exists = await sql.query('SELECT 1 FROM session_machines WHERE sid = $1', [w.sid]);
    if (exists.rowCount) throw new SessionConflictError(w.sid);
    await insertMachine(sql, w, counts);
    // One of Sydent's sessions has a machine row from now on: counted by its state, no longer by `validated`.
    counts.sydent(current.validated, -1);
  } else {
    // The state it had, read from the row locked at the version expected: the one this save replaces.
    const res = await sql.query<{ old_state: string }>(
      `WITH old AS (SELECT sid, state FROM session_machines WHERE sid = $6 AND row_version = $7 FOR UPDATE)
       UPDATE session_machines m SET state = $1, context = $2, machine_version = $3, history = $4,
         row_version = m.row_version + 1, updated_ts = $5
       FROM old WHERE m.sid = old.sid AND m.row_version = $7
       RETURNING old.state AS old_state`,
      [w.state, w.context, w.machineVersion, historyJson(w.history), w.now, w.sid, expectedVersion],
    );
    const old = res.rows[0];
    if (res.rowCount !== 1 || !old) throw new SessionConflictError(w.sid);
    counts.moved('machine', old.old_state, w.state);
  }
  const sydent = sydentColumnsOf(w);
  // Most changes (a send's end, a wrong token) leave Sydent's columns as they are: two statements fewer, as on SQLite.
  if (!sameSydentColumns(current, sydent)) {
    await sql.query('UPDATE threepid_validation_sessions SET validated = $1, mtime = $2 WHERE id = $3', [
      sydent.validated,
      sydent.mtime,
      w.sid,
    ]);
    await sql.query('UPDATE threepid_token_auths SET token = $1, sendAttemptNumber = $2 WHERE validationSession = $3', [
      w.token,
      w.sendAttempt,
      w.sid,
    ]);
  }
  return (expectedVersion ?? 0) + 1;
}

/** A new session: Sydent's two rows, its machine row, and the count of its state, in one statement. */
const CREATE_SESSION_SQL = `WITH session AS (
    INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime)
    VALUES ($1, $2, $3, $4, 0, $5) RETURNING id
  ), token AS (
    INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) SELECT id, $6, $7 FROM session
  ), machine AS (
    INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts)
    SELECT id, $8, $9, $10, 1, $11, $12 FROM session RETURNING state
  ), counted AS (
    INSERT INTO sydent_ts_machine_counts AS c (state, n) SELECT state, 1 FROM machine
    ON CONFLICT (state) DO UPDATE SET n = c.n + EXCLUDED.n
  )
  SELECT count(*) FROM machine`;

/**
 * saveSession's work for a session whose machine row is at a known version, in one statement: the session row locked
 * (saves of one session from several nodes run one after the other), Sydent's columns checked against what the writer
 * last saw, the machine row updated at the version expected, Sydent's columns written when they change, the state
 * counts moved. Each write depends on the machine row's update, so nothing is written unless it is.
 * `$1` sid, `$2`…`$6` the machine row, `$7` the version expected, `$8` whether Sydent's columns are checked, `$9`…`$12`
 * the columns expected, `$13`…`$16` the columns written (validated, mtime, token, send attempt).
 */
const SAVE_AT_VERSION_SQL = `WITH current AS MATERIALIZED (
    SELECT s.id, s.validated, s.mtime, t.token, t.sendAttemptNumber AS send_attempt
    FROM threepid_validation_sessions s
    LEFT JOIN threepid_token_auths t ON t.validationSession = s.id
    WHERE s.id = $1 ORDER BY t.id DESC LIMIT 1 FOR UPDATE OF s
  ), seen AS MATERIALIZED (
    SELECT id, (validated IS NOT DISTINCT FROM $13::integer AND mtime IS NOT DISTINCT FROM $14::bigint
      AND token IS NOT DISTINCT FROM $15::text AND send_attempt IS NOT DISTINCT FROM $16::bigint) AS unchanged
    FROM current
    WHERE NOT $8::boolean OR (validated IS NOT DISTINCT FROM $9::integer AND mtime IS NOT DISTINCT FROM $10::bigint
      AND token IS NOT DISTINCT FROM $11::text AND send_attempt IS NOT DISTINCT FROM $12::bigint)
  ), old AS MATERIALIZED (
    SELECT m.sid, m.state FROM session_machines m JOIN seen ON m.sid = seen.id WHERE m.row_version = $7 FOR UPDATE OF m
  ), saved AS (
    UPDATE session_machines m SET state = $2, context = $3, machine_version = $4, history = $5,
      row_version = m.row_version + 1, updated_ts = $6
    FROM old WHERE m.sid = old.sid AND m.row_version = $7
    RETURNING old.state AS old_state
  ), sydent_session AS (
    UPDATE threepid_validation_sessions SET validated = $13, mtime = $14
    WHERE id = $1 AND EXISTS (SELECT 1 FROM saved) AND NOT (SELECT unchanged FROM seen)
  ), sydent_token AS (
    UPDATE threepid_token_auths SET token = $15, sendAttemptNumber = $16
    WHERE validationSession = $1 AND EXISTS (SELECT 1 FROM saved) AND NOT (SELECT unchanged FROM seen)
  ), ${movedCountsCte('machine', 'saved', 'old_state', '$2::text')}
  SELECT count(*)::int AS saved FROM saved`;

async function saveAtVersion(
  pool: pg.Pool,
  w: SessionWrite,
  expectedVersion: number,
  q: WriteRequest,
): Promise<number> {
  q.cancel?.throwIfAborted();
  const seen = w.expectedSydent;
  const written = sydentColumnsOf(w);
  const rows = await oneStatement<{ saved: number }>(
    pool,
    {
      name: 'save_session_at_version',
      text: SAVE_AT_VERSION_SQL,
      values: [
        ...machineValues(w),
        expectedVersion,
        seen !== null,
        seen?.validated ?? null,
        seen?.mtime ?? null,
        seen?.token ?? null,
        seen?.sendAttemptNumber ?? null,
        written.validated,
        written.mtime,
        written.token,
        written.sendAttemptNumber,
      ],
    },
    () => q.cancel?.throwIfAborted(),
  );
  // Gone (swept since it was read), changed by someone else, or saved by another node first: read again.
  if (rows[0]?.saved !== 1) throw new SessionConflictError(w.sid);
  return expectedVersion + 1;
}

async function enqueueCallback(sql: Sql, c: CallbackEnqueue, counts: CountDeltas): Promise<number> {
  const res = await sql.query<{ id: number }>(
    `WITH queued AS (
       INSERT INTO callback_outbox (destination, path, body, medium, address, next_attempt_ts, created_ts)
       VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id
     )
     SELECT id, ${notifyCall('callbacks', '$1::text')} FROM queued`,
    [c.destination, c.path, JSON.stringify(c.body), c.medium, c.address, c.now],
  );
  counts.callback('pending', 1);
  return res.rows[0]!.id;
}

/**
 * A 3PID's row of the replication log given a new id (drawn once LOG_APPEND_LOCK is held: see the comment at the top)
 * and the values of `$2`…`$8` (medium, address, lookup_hash, mxid, ts, notBefore, notAfter), for each row of the CTE
 * `from`: SQLite's INSERT OR REPLACE, so that peers are sent it again. One id drawn per append, as in SQLite (the
 * backlog shown is the newest id less the cursor). A row another append committed while this one waited for the
 * lock is found by ON CONFLICT whatever the statement's snapshot.
 */
const appendLocal = (from: string): string => `INSERT INTO local_threepid_associations AS l
    (id, medium, address, lookup_hash, mxid, ts, notBefore, notAfter)
  SELECT nextval(pg_get_serial_sequence('local_threepid_associations', 'id')),
    $2::text, $3::text, $4::text, $5::text, $6::bigint, $7::bigint, $8::bigint FROM ${from}
  ON CONFLICT (medium, address) DO UPDATE SET id = EXCLUDED.id,
    lookup_hash = EXCLUDED.lookup_hash, mxid = EXCLUDED.mxid, ts = EXCLUDED.ts, notBefore = EXCLUDED.notBefore,
    notAfter = EXCLUDED.notAfter
  RETURNING id`;

/** Takes LOG_APPEND_LOCK (`$1`); every pusher hears at the commit that the log grew. */
const LOCK_LOG = `SELECT pg_advisory_xact_lock($1::bigint), ${notifyCall('log')}`;

/**
 * `$1`…`$10` of a bind's append: the log's lock, then the row's medium, address, lookup_hash, mxid, ts, notBefore,
 * notAfter, originServer and sgAssoc.
 */
const bindValues = (req: BindRecord): unknown[] => [
  LOG_APPEND_LOCK,
  req.medium,
  req.address,
  req.lookupHash,
  req.mxid,
  req.ts,
  req.ts,
  req.notAfter,
  req.originServer,
  req.sgAssoc,
];

/**
 * The last statement of a bind: the lock, the log's row, our global row (whose originId is the log's id) and the
 * counts noted so far, in that order.
 */
async function appendBind(req: BindRecord, counts: CountDeltas, commitWith: CommitWith): Promise<void> {
  const values = bindValues(req);
  const ctes = [
    `locked AS MATERIALIZED (${LOCK_LOG})`,
    `logged AS (${appendLocal('locked')})`,
    `global AS (
       INSERT INTO global_threepid_associations
         (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
       SELECT $2, $3, $4, $5, $6, $7, $8, $9::text, logged.id, $10::text FROM logged
       ON CONFLICT DO NOTHING
     )`,
  ];
  const countsCte = counts.cte(values.length + 1, 'logged');
  if (countsCte) ctes.push(countsCte.sql);
  // Every CTE runs, referenced or not; the counts' join with `logged` makes them run once the lock is held. The
  // commit goes with the statement: the lock is held for the time PostgreSQL takes, not for a round trip more.
  await commitWith(`WITH ${ctes.join(',\n')} SELECT count(*) FROM ${countsCte?.last ?? 'logged'}`, [
    ...values,
    ...(countsCte?.values ?? []),
  ]);
}

/**
 * A bind without a session to save, in one statement (one round trip, planned once per connection): the pepper's row
 * share-locked and compared, the pending invites locked and compared, then, only when both are as the caller saw
 * them, the invites marked sent, the homeserver callback queued, and the log's lock, append and global row (with the
 * counts after the lock, as in appendBind). Answers which check failed, if one did; nothing is written then. (`told`
 * is read by the last SELECT because a SELECT in WITH runs only when read.)
 * `$1` the log's lock, `$2`…`$10` as appendBind's, `$11` the pepper seen, `$12` the pending invites' ids seen (sorted),
 * `$13` sent_ts (seconds), `$14`…`$16` the callback's destination, path and body (null: none).
 */
const BIND_SQL = `WITH checked AS MATERIALIZED (
    SELECT (${PEPPER_SQL} FOR SHARE) IS NOT DISTINCT FROM $11::text AS pepper_ok,
      coalesce((SELECT array_agg(p.id ORDER BY p.id) FROM (
        SELECT id FROM invite_tokens WHERE medium = $2 AND address = $3 AND sent_ts IS NULL FOR UPDATE
      ) p), '{}') = $12::bigint[] AS invites_ok
  ), go AS MATERIALIZED (
    SELECT 1 FROM checked WHERE pepper_ok AND invites_ok
  ), sent AS (
    UPDATE invite_tokens SET sent_ts = $13
    WHERE medium = $2 AND address = $3 AND sent_ts IS NULL AND EXISTS (SELECT 1 FROM go)
  ), queued AS (
    INSERT INTO callback_outbox (destination, path, body, medium, address, next_attempt_ts, created_ts)
    SELECT $14::text, $15::text, $16::text, $2, $3, $6, $6 FROM go WHERE $14::text IS NOT NULL
    RETURNING id
  ), told AS (
    SELECT ${notifyCall('callbacks', '$14::text')} FROM queued
  ), locked AS MATERIALIZED (
    SELECT pg_advisory_xact_lock($1::bigint), ${notifyCall('log')} FROM go
  ), logged AS (${appendLocal('locked')}
  ), global AS (
    INSERT INTO global_threepid_associations
      (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
    SELECT $2, $3, $4, $5, $6, $7, $8, $9::text, logged.id, $10::text FROM logged
    ON CONFLICT DO NOTHING
  ), counted AS (
    INSERT INTO sydent_ts_callback_counts AS c (state, n)
    SELECT 'pending', q.n FROM (SELECT count(*) AS n FROM queued) q, (SELECT count(*) FROM logged) AS after_the_lock
    WHERE q.n > 0
    ON CONFLICT (state) DO UPDATE SET n = c.n + EXCLUDED.n
  )
  SELECT pepper_ok, invites_ok, (SELECT count(*)::int FROM logged) AS logged, (SELECT count(*)::int FROM told) AS told
  FROM checked`;

async function bindAlone(pool: pg.Pool, req: BindRecord, q: WriteRequest): Promise<void> {
  q.cancel?.throwIfAborted();
  const [row] = await oneStatement<{ pepper_ok: boolean; invites_ok: boolean; logged: number }>(
    pool,
    {
      name: 'bind',
      text: BIND_SQL,
      values: [
        ...bindValues(req),
        req.pepperSeen,
        [...req.inviteIds].sort((a, b) => a - b),
        Math.floor(req.ts / 1000),
        req.callback?.destination ?? null,
        req.callback?.path ?? null,
        req.callback ? JSON.stringify(req.callback.body) : null,
      ],
    },
    () => q.cancel?.throwIfAborted(),
  );
  if (!row?.pepper_ok) throw new BindConflictError('the lookup pepper changed');
  if (!row.invites_ok) throw new BindConflictError('the pending invites changed');
  if (row.logged !== 1) throw new Error('the bind was not appended to the replication log');
}

/** A bind, ending its transaction. */
async function bind(sql: Sql, req: BindRecord, counts: CountDeltas, commitWith: CommitWith): Promise<void> {
  if ((await storedPepper(sql)) !== req.pepperSeen) throw new BindConflictError('the lookup pepper changed');
  const pending = (
    await sql.query<{ id: number }>(
      'SELECT id FROM invite_tokens WHERE medium = $1 AND address = $2 AND sent_ts IS NULL FOR UPDATE',
      [req.medium, req.address],
    )
  ).rows.map((r) => r.id);
  if (!sameIds(pending, req.inviteIds)) throw new BindConflictError('the pending invites changed');
  // invite_tokens keeps Sydent's seconds.
  if (pending.length) {
    await sql.query('UPDATE invite_tokens SET sent_ts = $1 WHERE medium = $2 AND address = $3 AND sent_ts IS NULL', [
      Math.floor(req.ts / 1000),
      req.medium,
      req.address,
    ]);
  }
  // Delivered only after the commit, when the row becomes visible to the workers.
  if (req.callback) {
    const { destination, path, body } = req.callback;
    await enqueueCallback(
      sql,
      { destination, path, body, medium: req.medium, address: req.address, now: req.ts },
      counts,
    );
  }
  await appendBind(req, counts, commitWith);
}

/**
 * An unbind's tombstone in the replication log, when the 3PID is bound to `mxid`, and its global rows gone. The lock
 * is taken by a statement of its own: the check and the delete must see every append committed before it.
 */
async function unbind(
  sql: Sql,
  e: { medium: string; address: string; mxid: string; now: number },
  commitWith: CommitWith,
): Promise<boolean> {
  await sql.query(LOCK_LOG, [LOG_APPEND_LOCK]);
  const rows = await commitWith<{ n: number }>(
    `WITH bound AS (SELECT 1 FROM local_threepid_associations WHERE medium = $2 AND address = $3 AND mxid = $1),
     logged AS (${appendLocal('bound')}),
     gone AS (
       DELETE FROM global_threepid_associations WHERE medium = $2 AND address = $3 AND EXISTS (SELECT 1 FROM logged)
     )
     SELECT count(*)::int AS n FROM logged`,
    [e.mxid, e.medium, e.address, null, null, e.now, null, null],
  );
  return (rows[0]?.n ?? 0) > 0;
}

/**
 * A claimed callback's row moved out of 'delivering' by `update` (which returns the new state), with its counts, in
 * one named statement; whether it was.
 */
async function leaveDelivering(
  pool: pg.Pool,
  q: WriteRequest,
  name: string,
  update: string,
  values: unknown[],
): Promise<boolean> {
  q.cancel?.throwIfAborted();
  const [row] = await oneStatement<{ n: number }>(
    pool,
    {
      name,
      text: `WITH left_delivering AS (${update}),
        ${movedCountsCte('callback', 'left_delivering', "'delivering'", 'state')}
        SELECT count(*)::int AS n FROM left_delivering`,
      values,
    },
    () => q.cancel?.throwIfAborted(),
  );
  return row?.n === 1;
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((id) => set.has(id));
}

/** Rows a worker may take: due and unclaimed, or claimed by someone whose lease has run out. */
const CLAIMABLE = `((c.state IN ('pending', 'retrying') AND c.next_attempt_ts <= $1) OR c.state = 'delivering')
  AND (c.claimed_until IS NULL OR c.claimed_until < $1)`;

/**
 * The claim, as SQLite's (callbacks.ts, CALLBACK_CLAIM_SQL): the destinations with open rows walked by one index probe each,
 * then the most overdue claimable row of each destination the worker is not busy with, found from the first of its
 * open rows in due order, so a destination's backlog is never read; of those the most overdue `$4`, each locked or
 * skipped when another node is claiming it at this moment; the counts moved in the same statement.
 */
export const CLAIM_CALLBACKS_SQL = `WITH RECURSIVE ${PG_OPEN_DESTINATIONS}, firsts AS (
    SELECT f.id FROM open_destinations o CROSS JOIN LATERAL (
      SELECT c.id FROM callback_outbox c
      WHERE c.destination = o.destination AND c.${PG_OPEN} AND c.next_attempt_ts <= $1 AND ${CLAIMABLE}
      ORDER BY c.next_attempt_ts, c.id LIMIT 1
    ) f
    WHERE o.destination IS NOT NULL AND NOT (o.destination = ANY($3::text[]))
  ), picked AS (
    SELECT c.id, c.state FROM callback_outbox c JOIN firsts f ON f.id = c.id
    WHERE ${CLAIMABLE}
    ORDER BY c.next_attempt_ts, c.id LIMIT $4
    FOR UPDATE OF c SKIP LOCKED
  ), claimed AS (
    UPDATE callback_outbox o SET state = 'delivering', claimed_until = $2
    FROM picked WHERE o.id = picked.id
    RETURNING o.id, o.destination, o.path, o.body, o.medium, o.address, o.attempts, o.next_attempt_ts, o.last_error,
              o.created_ts, o.claimed_until, picked.state AS prev_state
  ), ${movedCountsCte('callback', 'claimed', 'prev_state', "'delivering'")}
  SELECT * FROM claimed`;

/**
 * A callback delivered, whoever holds its claim (the homeserver has it, whatever else happens to the row): the state it
 * leaves read from the row as locked (another node may have moved it since the statement began), the counts moved,
 * and with `$3` the 3PID's invite tokens deleted. `$1` now, `$2` the row's id.
 */
const CALLBACK_DELIVERED_SQL = `WITH old AS (
    SELECT id, state FROM callback_outbox WHERE id = $2 AND state NOT IN ('delivered', 'abandoned') FOR UPDATE
  ), done AS (
    UPDATE callback_outbox o SET state = 'delivered', delivered_ts = $1, claimed_until = NULL, last_error = NULL
    FROM old WHERE o.id = old.id RETURNING o.medium, o.address, old.state AS prev_state
  ), ${movedCountsCte('callback', 'done', 'prev_state', "'delivered'")},
  tokens AS (
    DELETE FROM invite_tokens i USING done WHERE $3::boolean AND i.medium = done.medium AND i.address = done.address
    RETURNING 1
  )
  SELECT (SELECT count(*)::int FROM done) AS updated, (SELECT count(*)::int FROM tokens) AS tokens_deleted`;

export interface PgWriteParts {
  pool: pg.Pool;
  tokens: TokenCache;
  buckets: PgRateBuckets;
  coordinator: PgCoordinator;
}

export function pgWriteOps({ pool, tokens, buckets, coordinator }: PgWriteParts): StoreWriteOps {
  /**
   * One transaction, ending with the state counts its work noted; a caller that gave up (its deadline passed)
   * before it started, or while it waited for a connection, is not written for.
   */
  const tx = async <T>(
    req: WriteRequest,
    work: (sql: Sql, counts: CountDeltas, commitWith: CommitWith) => Promise<T>,
  ): Promise<T> => {
    req.cancel?.throwIfAborted();
    return inTransaction(pool, async (sql, commitWith) => {
      req.cancel?.throwIfAborted();
      const counts = new CountDeltas();
      let committed = false;
      const result = await work(sql, counts, (text, values) => {
        committed = true;
        return commitWith(text, values);
      });
      if (!committed) {
        // The counts and the COMMIT in one message: a round trip less per write, and the count rows (which every
        // write of the same state updates) locked for no longer than the server takes to commit.
        const cte = counts.cte(1);
        if (cte) await commitWith(`WITH ${cte.sql} SELECT count(*) FROM ${cte.last}`, cte.values);
      } else if (!counts.empty) throw new Error('state counts noted after the commit');
      return result;
    });
  };
  return {
    registerAccount: (e, q) =>
      tx(q, async (sql) => {
        await sql.query(
          'INSERT INTO accounts (user_id, created_ts, consent_version) VALUES ($1, $2, NULL) ON CONFLICT DO NOTHING',
          [e.userId, e.now],
        );
        await sql.query('INSERT INTO tokens (token, user_id) VALUES ($1, $2)', [e.token, e.userId]);
      }),
    logout: (e, q) => {
      tokens.forget(e.token);
      return tx(q, async (sql) => {
        const deleted = ((await sql.query('DELETE FROM tokens WHERE token = $1', [e.token])).rowCount ?? 0) > 0;
        // The other nodes' token caches may still hold it.
        if (deleted) await sql.query(notifySql('accounts'));
        return deleted;
      });
    },
    acceptTerms: (e, q) =>
      tx(q, async (sql) => {
        for (const url of e.urls) {
          await sql.query('INSERT INTO accepted_terms_urls (user_id, url) VALUES ($1, $2) ON CONFLICT DO NOTHING', [
            e.userId,
            url,
          ]);
        }
        const accepted = new Set(
          (
            await sql.query<{ url: string }>('SELECT url FROM accepted_terms_urls WHERE user_id = $1', [e.userId])
          ).rows.map((r) => r.url),
        );
        const consented = e.documents.every((languages) => languages.some((url) => accepted.has(url)));
        if (consented) {
          await sql.query('UPDATE accounts SET consent_version = $1 WHERE user_id = $2', [e.masterVersion, e.userId]);
          // The cached accounts still carry the old consent, here and on the other nodes.
          tokens.clear();
          await sql.query(notifySql('accounts'));
        }
        return { consented };
      }),
    // One statement: one round trip, planned once per connection, all or nothing.
    createSession: async (e, q) => {
      q.cancel?.throwIfAborted();
      const w = e.write;
      try {
        await oneStatement(
          pool,
          {
            name: 'create_session',
            text: CREATE_SESSION_SQL,
            values: [
              w.sid,
              e.medium,
              w.address,
              e.clientSecret,
              w.mtime,
              w.token,
              w.sendAttempt,
              ...machineValues(w).slice(1),
            ],
          },
          () => q.cancel?.throwIfAborted(),
        );
      } catch (error) {
        // A sid in use (or being created by another node at this moment: the insert waits for its commit) is
        // refused, nothing written; the caller picks another.
        if (isDuplicateOf(error, 'threepid_validation_sessions')) throw new SidTakenError(w.sid);
        throw error;
      }
      return 1;
    },
    saveSession: (e, q) =>
      e.expectedVersion === null
        ? tx(q, (sql, counts) => saveSession(sql, e.write, null, counts))
        : saveAtVersion(pool, e.write, e.expectedVersion, q),
    // A slice of the sweep, oldest first through the mtime index; rows another node is sweeping are left to it.
    deleteOldSessions: (e, q) =>
      tx(q, async (sql, counts) => {
        // Each session gone is counted off where it was counted: by its machine row's state, else by `validated`.
        const res = await sql.query<{ validated: number | null; state: string | null }>(
          `WITH expired AS (
             SELECT id, validated FROM threepid_validation_sessions WHERE mtime < $1 ORDER BY mtime LIMIT $2
             FOR UPDATE SKIP LOCKED
           ), tokens AS (
             DELETE FROM threepid_token_auths WHERE validationSession IN (SELECT id FROM expired)
           ), machines AS (
             DELETE FROM session_machines WHERE sid IN (SELECT id FROM expired) RETURNING sid, state
           ), sessions AS (
             DELETE FROM threepid_validation_sessions WHERE id IN (SELECT id FROM expired) RETURNING id
           )
           SELECT e.validated, m.state FROM sessions s JOIN expired e ON e.id = s.id LEFT JOIN machines m ON m.sid = s.id`,
          [e.cutoffMs, e.limit],
        );
        for (const row of res.rows) {
          if (row.state === null) counts.sydent(row.validated, -1);
          else counts.machine(row.state, -1);
        }
        return res.rows.length;
      }),
    bind: (e, q) => bindAlone(pool, e, q),
    bindSession: (e, q) =>
      tx(q, async (sql, counts, commitWith) => {
        const rowVersion = await saveSession(sql, e.session.write, e.session.expectedVersion, counts);
        await bind(sql, e.bind, counts, commitWith);
        return rowVersion;
      }),
    unbind: (e, q) => tx(q, (sql, _counts, commitWith) => unbind(sql, e, commitWith)),
    storeInvite: (e, q) =>
      tx(q, async (sql) => {
        const seconds = Math.floor(e.now / 1000);
        await sql.query(
          'INSERT INTO invite_tokens (medium, address, room_id, sender, token, received_ts) VALUES ($1, $2, $3, $4, $5, $6)',
          [e.medium, e.address, e.roomId, e.sender, e.token, seconds],
        );
        await sql.query('INSERT INTO ephemeral_public_keys (public_key, persistence_ts) VALUES ($1, $2)', [
          e.ephemeralPublicKey,
          seconds,
        ]);
      }),
    discardInvite: (e, q) =>
      tx(q, async (sql) => {
        await sql.query('DELETE FROM invite_tokens WHERE token = $1', [e.token]);
        await sql.query('DELETE FROM ephemeral_public_keys WHERE public_key = $1', [e.ephemeralPublicKey]);
      }),
    checkEphemeralKey: (e, q) =>
      tx(
        q,
        async (sql) =>
          (
            await sql.query('UPDATE ephemeral_public_keys SET verify_count = verify_count + 1 WHERE public_key = $1', [
              e.publicKey,
            ])
          ).rowCount === 1,
      ),
    // The cursor only moves forward: a late answer to an older push never takes it back.
    markPeerSent: (e, q) =>
      tx(
        q,
        async (sql) =>
          ((
            await sql.query(
              `UPDATE peers SET lastSentVersion = $1, lastPokeSucceededAt = $2
               WHERE name = $3 AND (lastSentVersion IS NULL OR lastSentVersion < $1)`,
              [e.lastId, e.now, e.name],
            )
          ).rowCount ?? 0) > 0,
      ),
    applyPush: (e, q) =>
      tx(q, async (sql) => {
        if ((await storedPepper(sql)) !== e.pepperSeen) throw new BindConflictError('the lookup pepper changed');
        const result: ApplyPushResult = { inserted: 0, duplicates: 0, tombstones: 0, deleted: 0 };
        for (const a of inOriginOrder(e.associations)) {
          if (a.mxid === null) {
            result.tombstones++;
            // Bindings of the 3PID not newer than the tombstone, whatever their origin (as Sydent).
            result.deleted +=
              (
                await sql.query(
                  'DELETE FROM global_threepid_associations WHERE medium = $1 AND address = $2 AND ts <= $3',
                  [a.medium, a.address, a.ts],
                )
              ).rowCount ?? 0;
            continue;
          }
          const res = await sql.query(
            `INSERT INTO global_threepid_associations
               (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
            globalRowOf(a, a.mxid, e.originServer),
          );
          if (res.rowCount) result.inserted++;
          else result.duplicates++;
        }
        return result;
      }),
    enqueueCallback: (e, q) => tx(q, (sql, counts) => enqueueCallback(sql, e, counts)),
    claimCallbacks: async (e, q) => {
      if (e.limit <= 0) return [];
      q.cancel?.throwIfAborted();
      const rows = await oneStatement<ClaimedRow & { prev_state: string }>(
        pool,
        {
          name: 'claim_callbacks',
          text: CLAIM_CALLBACKS_SQL,
          values: [e.now, e.claimedUntil, e.excludeDestinations, e.limit],
        },
        () => q.cancel?.throwIfAborted(),
      );
      return claimedCallbacksOf(rows);
    },
    // Delivered wins whoever holds the claim: the homeserver has the callback, whatever else happens to the row.
    callbackDelivered: async (e, q) => {
      q.cancel?.throwIfAborted();
      const [row] = await oneStatement<{ updated: number; tokens_deleted: number }>(
        pool,
        { name: 'callback_delivered', text: CALLBACK_DELIVERED_SQL, values: [e.now, e.id, e.deleteInviteTokens] },
        () => q.cancel?.throwIfAborted(),
      );
      return row?.updated === 1
        ? { updated: true, tokensDeleted: row.tokens_deleted }
        : { updated: false, tokensDeleted: 0 };
    },
    retryCallback: (e, q) =>
      leaveDelivering(
        pool,
        q,
        'callback_retry',
        `UPDATE callback_outbox SET state = 'retrying', attempts = attempts + 1, next_attempt_ts = $1, last_error = $2,
           claimed_until = NULL
         WHERE id = $3 AND state = 'delivering' AND claimed_until = $4 RETURNING state`,
        [e.nextAttemptTs, e.lastError.slice(0, 1000), e.id, e.claimedUntil],
      ),
    abandonCallback: (e, q) =>
      leaveDelivering(
        pool,
        q,
        'callback_abandon',
        `UPDATE callback_outbox SET state = 'abandoned', last_error = $1, claimed_until = NULL
         WHERE id = $2 AND state = 'delivering' AND claimed_until = $3 RETURNING state`,
        [e.lastError.slice(0, 1000), e.id, e.claimedUntil],
      ),
    releaseCallback: (e, q) =>
      leaveDelivering(
        pool,
        q,
        'callback_release',
        `UPDATE callback_outbox SET state = CASE WHEN attempts = 0 THEN 'pending' ELSE 'retrying' END, claimed_until = NULL
         WHERE id = $1 AND state = 'delivering' AND claimed_until = $2 RETURNING state`,
        [e.id, e.claimedUntil],
      ),
    purgeCallbacks: (e, q) =>
      tx(q, async (sql, counts) => {
        const delivered =
          (
            await sql.query(`DELETE FROM callback_outbox WHERE state = 'delivered' AND delivered_ts < $1`, [
              e.now - DELIVERED_RETENTION_MS,
            ])
          ).rowCount ?? 0;
        const abandoned =
          (
            await sql.query(`DELETE FROM callback_outbox WHERE state = 'abandoned' AND created_ts < $1`, [
              e.now - ABANDONED_RETENTION_MS,
            ])
          ).rowCount ?? 0;
        counts.callback('delivered', -delivered);
        counts.callback('abandoned', -abandoned);
        return delivered + abandoned;
      }),
    takeRateToken: (e) => buckets.take(e),
    refundRateToken: (e) => buckets.refund(e),
    peerLease: (e) => coordinator.tryLease(e.name),
    holdKey: (e, q) => coordinator.holdKey(e.key, q.deadline),
    releaseKey: (e) => coordinator.releaseKey(e.key),
  };
}
