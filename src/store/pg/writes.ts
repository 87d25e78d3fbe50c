/**
 * The store's writes on PostgreSQL: the same operations and checks as the SQLite table modules (src/store/*.ts),
 * each in a transaction of its own, safe with several nodes writing at once:
 *
 * - a session row is locked (`FOR UPDATE`) while its save checks Sydent's columns, and the machine row's version is
 *   checked by the UPDATE itself: of two concurrent saves from the same version, one wins and the other gets
 *   SessionConflictError (the caller re-reads and re-applies);
 * - the replication log (`local_threepid_associations`) takes its ids in commit order: every append holds a
 *   transaction advisory lock, so a pusher reading `id > cursor` never passes an id that commits later;
 * - callback claims take rows with `FOR UPDATE SKIP LOCKED`, so two nodes never claim the same row;
 * - what other nodes must act on is NOTIFYed in the same transaction, so they hear of it at its commit (coordinator.ts).
 */
import type pg from 'pg';

import { ASSOCIATION_LIFETIME_MS, BindConflictError, type BindRecord } from '../associations.js';
import type { TokenCache } from '../accounts.js';
import {
  ABANDONED_RETENTION_MS,
  DELIVERED_RETENTION_MS,
  claimedCallbacksOf,
  type CallbackEnqueue,
  type ClaimedRow,
} from '../callbacks.js';
import type { StoreWriteOps, WriteRequest } from '../engine.js';
import type { ApplyPushResult } from '../peers.js';
import {
  sameSydentColumns,
  SessionConflictError,
  SidTakenError,
  type SessionWrite,
  type SydentColumns,
} from '../sessions.js';
import { notifySql, type PgCoordinator } from './coordinator.js';
import { inTransaction, type Sql } from './pool.js';
import type { PgRateBuckets } from './rate-buckets.js';
import { PEPPER_SQL } from './reads.js';

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

async function insertMachine(sql: Sql, w: SessionWrite): Promise<void> {
  await sql.query(
    'INSERT INTO session_machines (sid, state, context, machine_version, row_version, history, updated_ts) VALUES ($1, $2, $3, $4, 1, $5, $6)',
    [w.sid, w.state, w.context, w.machineVersion, historyJson(w.history), w.now],
  );
}

async function saveSession(sql: Sql, w: SessionWrite, expectedVersion: number | null): Promise<number> {
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
  if (current && w.expectedSydent && !sameSydentColumns(current, w.expectedSydent))
    throw new SessionConflictError(w.sid);
  if (expectedVersion === null) {
    const exists = await sql.query('SELECT 1 FROM session_machines WHERE sid = $1', [w.sid]);
    if (exists.rowCount) throw new SessionConflictError(w.sid);
    await insertMachine(sql, w);
  } else {
    const res = await sql.query(
      `UPDATE session_machines SET state = $1, context = $2, machine_version = $3, history = $4, row_version = row_version + 1,
         updated_ts = $5
       WHERE sid = $6 AND row_version = $7`,
      [w.state, w.context, w.machineVersion, historyJson(w.history), w.now, w.sid, expectedVersion],
    );
    if (res.rowCount !== 1) throw new SessionConflictError(w.sid);
  }
  await sql.query('UPDATE threepid_validation_sessions SET validated = $1, mtime = $2 WHERE id = $3', [
    w.validated ? 1 : 0,
    w.mtime,
    w.sid,
  ]);
  await sql.query('UPDATE threepid_token_auths SET token = $1, sendAttemptNumber = $2 WHERE validationSession = $3', [
    w.token,
    w.sendAttempt,
    w.sid,
  ]);
  return (expectedVersion ?? 0) + 1;
}

async function enqueueCallback(sql: Sql, c: CallbackEnqueue): Promise<number> {
  const res = await sql.query<{ id: number }>(
    `INSERT INTO callback_outbox (destination, path, body, medium, address, next_attempt_ts, created_ts)
     VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING id`,
    [c.destination, c.path, JSON.stringify(c.body), c.medium, c.address, c.now],
  );
  await sql.query(notifySql('callbacks'));
  return res.rows[0]!.id;
}

/**
 * Appends to the replication log: a 3PID's row replaced by a new one with a new id (SQLite's INSERT OR REPLACE),
 * so that peers are sent it again. Caller holds LOG_APPEND_LOCK.
 */
async function appendLocal(
  sql: Sql,
  r: {
    medium: string;
    address: string;
    lookupHash: string | null;
    mxid: string | null;
    ts: number;
    notBefore: number | null;
    notAfter: number | null;
  },
): Promise<number> {
  await sql.query('DELETE FROM local_threepid_associations WHERE medium = $1 AND address = $2', [r.medium, r.address]);
  const res = await sql.query<{ id: number }>(
    `INSERT INTO local_threepid_associations (medium, address, lookup_hash, mxid, ts, notBefore, notAfter)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
    [r.medium, r.address, r.lookupHash, r.mxid, r.ts, r.notBefore, r.notAfter],
  );
  return res.rows[0]!.id;
}

/** Taken by every append to the replication log, which every pusher hears of at its commit. */
async function lockLog(sql: Sql): Promise<void> {
  await sql.query('SELECT pg_advisory_xact_lock($1)', [LOG_APPEND_LOCK]);
  await sql.query(notifySql('log'));
}

async function bind(sql: Sql, req: BindRecord): Promise<void> {
  await lockLog(sql);
  if ((await storedPepper(sql)) !== req.pepperSeen) throw new BindConflictError('the lookup pepper changed');
  const pending = (
    await sql.query<{ id: number }>(
      'SELECT id FROM invite_tokens WHERE medium = $1 AND address = $2 AND sent_ts IS NULL FOR UPDATE',
      [req.medium, req.address],
    )
  ).rows.map((r) => r.id);
  if (!sameIds(pending, req.inviteIds)) throw new BindConflictError('the pending invites changed');
  const localId = await appendLocal(sql, {
    medium: req.medium,
    address: req.address,
    lookupHash: req.lookupHash,
    mxid: req.mxid,
    ts: req.ts,
    notBefore: req.ts,
    notAfter: req.notAfter,
  });
  await sql.query(
    `INSERT INTO global_threepid_associations
       (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
     VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING`,
    [req.medium, req.address, req.lookupHash, req.mxid, req.ts, req.notAfter, req.originServer, localId, req.sgAssoc],
  );
  // invite_tokens keeps Sydent's seconds.
  if (pending.length) {
    await sql.query('UPDATE invite_tokens SET sent_ts = $1 WHERE medium = $2 AND address = $3 AND sent_ts IS NULL', [
      Math.floor(req.ts / 1000),
      req.medium,
      req.address,
    ]);
  }
  if (req.callback)
    await enqueueCallback(sql, { ...req.callback, medium: req.medium, address: req.address, now: req.ts });
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  const set = new Set(a);
  return b.every((id) => set.has(id));
}

/** Rows a worker may take: due and unclaimed, or claimed by someone whose lease has run out. */
const CLAIMABLE = `((c.state IN ('pending', 'retrying') AND c.next_attempt_ts <= $1) OR c.state = 'delivering')
  AND (c.claimed_until IS NULL OR c.claimed_until < $1)`;

export interface PgWriteParts {
  pool: pg.Pool;
  tokens: TokenCache;
  buckets: PgRateBuckets;
  coordinator: PgCoordinator;
}

export function pgWriteOps({ pool, tokens, buckets, coordinator }: PgWriteParts): StoreWriteOps {
  /**
   * One transaction; a caller that gave up (its deadline passed) before it started, or while it waited for a
   * connection, is not written for.
   */
  const tx = async <T>(req: WriteRequest, work: (sql: Sql) => Promise<T>): Promise<T> => {
    req.signal?.throwIfAborted();
    return inTransaction(pool, (sql) => {
      req.signal?.throwIfAborted();
      return work(sql);
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
    createSession: (e, q) =>
      tx(q, async (sql) => {
        const w = e.write;
        // A sid in use (or being created by another node at this moment: the insert waits for its commit) inserts
        // nothing and is refused; the caller picks another.
        const inserted = await sql.query(
          `INSERT INTO threepid_validation_sessions (id, medium, address, clientSecret, validated, mtime) VALUES ($1, $2, $3, $4, 0, $5)
           ON CONFLICT (id) DO NOTHING`,
          [w.sid, e.medium, w.address, e.clientSecret, w.mtime],
        );
        if (inserted.rowCount !== 1) throw new SidTakenError(w.sid);
        await sql.query(
          'INSERT INTO threepid_token_auths (validationSession, token, sendAttemptNumber) VALUES ($1, $2, $3)',
          [w.sid, w.token, w.sendAttempt],
        );
        await insertMachine(sql, w);
        return 1;
      }),
    saveSession: (e, q) => tx(q, (sql) => saveSession(sql, e.write, e.expectedVersion)),
    // A slice of the sweep, oldest first through the mtime index; rows another node is sweeping are left to it.
    deleteOldSessions: (e, q) =>
      tx(q, async (sql) => {
        const res = await sql.query(
          `WITH expired AS (
             SELECT id FROM threepid_validation_sessions WHERE mtime < $1 ORDER BY mtime LIMIT $2 FOR UPDATE SKIP LOCKED
           ), tokens AS (
             DELETE FROM threepid_token_auths WHERE validationSession IN (SELECT id FROM expired)
           ), machines AS (
             DELETE FROM session_machines WHERE sid IN (SELECT id FROM expired)
           )
           DELETE FROM threepid_validation_sessions WHERE id IN (SELECT id FROM expired)`,
          [e.cutoffMs, e.limit],
        );
        return res.rowCount ?? 0;
      }),
    bind: (e, q) => tx(q, (sql) => bind(sql, e)),
    bindSession: (e, q) =>
      tx(q, async (sql) => {
        const rowVersion = await saveSession(sql, e.session.write, e.session.expectedVersion);
        await bind(sql, e.bind);
        return rowVersion;
      }),
    unbind: (e, q) =>
      tx(q, async (sql) => {
        await lockLog(sql);
        const bound = await sql.query(
          'SELECT 1 FROM local_threepid_associations WHERE medium = $1 AND address = $2 AND mxid = $3',
          [e.medium, e.address, e.mxid],
        );
        if (!bound.rowCount) return false;
        await appendLocal(sql, {
          medium: e.medium,
          address: e.address,
          lookupHash: null,
          mxid: null,
          ts: e.now,
          notBefore: null,
          notAfter: null,
        });
        await sql.query('DELETE FROM global_threepid_associations WHERE medium = $1 AND address = $2', [
          e.medium,
          e.address,
        ]);
        return true;
      }),
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
        const ordered = [...e.associations].sort((a, b) => a.originId - b.originId);
        for (const a of ordered) {
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
            [
              a.medium,
              a.address,
              a.lookupHash,
              a.mxid,
              a.ts,
              a.notBefore ?? a.ts,
              a.notAfter ?? a.ts + ASSOCIATION_LIFETIME_MS,
              e.originServer,
              a.originId,
              a.sgAssoc,
            ],
          );
          if (res.rowCount) result.inserted++;
          else result.duplicates++;
        }
        return result;
      }),
    enqueueCallback: (e, q) => tx(q, (sql) => enqueueCallback(sql, e)),
    claimCallbacks: (e, q) => {
      if (e.limit <= 0) return Promise.resolve([]);
      return tx(q, async (sql) => {
        // The most overdue row of each destination the worker is not busy with; of those, the most overdue `limit`,
        // each locked or skipped when another node is claiming it at this moment.
        const res = await sql.query<ClaimedRow>(
          `WITH firsts AS (
             SELECT DISTINCT ON (c.destination) c.id FROM callback_outbox c
             WHERE ${CLAIMABLE} AND NOT (c.destination = ANY($3::text[]))
             ORDER BY c.destination, c.next_attempt_ts, c.id
           ), picked AS (
             SELECT c.id FROM callback_outbox c JOIN firsts f ON f.id = c.id
             WHERE ${CLAIMABLE}
             ORDER BY c.next_attempt_ts, c.id LIMIT $4
             FOR UPDATE OF c SKIP LOCKED
           )
           UPDATE callback_outbox o SET state = 'delivering', claimed_until = $2
           FROM picked WHERE o.id = picked.id
           RETURNING o.id, o.destination, o.path, o.body, o.medium, o.address, o.attempts, o.next_attempt_ts, o.last_error,
                     o.created_ts, o.claimed_until`,
          [e.now, e.claimedUntil, e.excludeDestinations, e.limit],
        );
        return claimedCallbacksOf(res.rows);
      });
    },
    // Delivered wins whoever holds the claim: the homeserver has the callback, whatever else happens to the row.
    callbackDelivered: (e, q) =>
      tx(q, async (sql) => {
        const row = (
          await sql.query<{ medium: string; address: string }>(
            `UPDATE callback_outbox SET state = 'delivered', delivered_ts = $1, claimed_until = NULL, last_error = NULL
             WHERE id = $2 AND state NOT IN ('delivered', 'abandoned') RETURNING medium, address`,
            [e.now, e.id],
          )
        ).rows[0];
        if (!row) return { updated: false, tokensDeleted: 0 };
        const tokensDeleted = e.deleteInviteTokens
          ? ((
              await sql.query('DELETE FROM invite_tokens WHERE medium = $1 AND address = $2', [row.medium, row.address])
            ).rowCount ?? 0)
          : 0;
        return { updated: true, tokensDeleted };
      }),
    retryCallback: (e, q) =>
      tx(
        q,
        async (sql) =>
          (
            await sql.query(
              `UPDATE callback_outbox SET state = 'retrying', attempts = attempts + 1, next_attempt_ts = $1, last_error = $2,
                 claimed_until = NULL
               WHERE id = $3 AND state = 'delivering' AND claimed_until = $4`,
              [e.nextAttemptTs, e.lastError.slice(0, 1000), e.id, e.claimedUntil],
            )
          ).rowCount === 1,
      ),
    abandonCallback: (e, q) =>
      tx(
        q,
        async (sql) =>
          (
            await sql.query(
              `UPDATE callback_outbox SET state = 'abandoned', last_error = $1, claimed_until = NULL
               WHERE id = $2 AND state = 'delivering' AND claimed_until = $3`,
              [e.lastError.slice(0, 1000), e.id, e.claimedUntil],
            )
          ).rowCount === 1,
      ),
    releaseCallback: (e, q) =>
      tx(
        q,
        async (sql) =>
          (
            await sql.query(
              `UPDATE callback_outbox SET state = CASE WHEN attempts = 0 THEN 'pending' ELSE 'retrying' END, claimed_until = NULL
               WHERE id = $1 AND state = 'delivering' AND claimed_until = $2`,
              [e.id, e.claimedUntil],
            )
          ).rowCount === 1,
      ),
    purgeCallbacks: (e, q) =>
      tx(q, async (sql) => {
        const delivered = await sql.query(
          `DELETE FROM callback_outbox WHERE state = 'delivered' AND delivered_ts < $1`,
          [e.now - DELIVERED_RETENTION_MS],
        );
        const abandoned = await sql.query(`DELETE FROM callback_outbox WHERE state = 'abandoned' AND created_ts < $1`, [
          e.now - ABANDONED_RETENTION_MS,
        ]);
        return (delivered.rowCount ?? 0) + (abandoned.rowCount ?? 0);
      }),
    takeRateToken: (e) => buckets.take(e),
    refundRateToken: (e) => buckets.refund(e),
    peerLease: (e) => coordinator.tryLease(e.name),
    holdKey: (e, q) => coordinator.holdKey(e.key, q.deadline),
    releaseKey: (e) => coordinator.releaseKey(e.key),
  };
}
