/**
 * The read facade on PostgreSQL: the same answers as the SQLite reads (src/store/reads.ts and the table modules),
 * each one statement on the pool, prepared by name on each connection. Column names PostgreSQL folds to lower case
 * are given back their camelCase by alias, so rows have the same shape on both engines.
 */
import type pg from 'pg';

import { SESSION_MACHINE_VERSION, sessionStateName } from '../../machines/validation-session.js';
import type { Account, TokenCache } from '../accounts.js';
import type { PendingInvite } from '../associations.js';
import { toDebugRow, type CallbackCounts, type DebugRow } from '../callbacks.js';
import { PEER_KEY_ALG, peerRowsOf, type ActivePeer, type LocalAssociationRow, type PeerJoinRow } from '../peers.js';
import type { StoreReads } from '../reads.js';
import { storedSessionOf, type MachineRow, type SessionJoinRow, type SydentSessionRow } from '../sessions.js';
import { objectJson } from '../mappings-json.js';
import { ReadBatch, type BatchRow } from './read-batch.js';
import { query } from './pool.js';

/** How long a read pepper is reused: it changes only on rotation. */
const PEPPER_CACHE_MS = 1000;

const DEBUG_COLUMNS =
  'id, destination, state, attempts, next_attempt_ts, claimed_until, last_error, created_ts, delivered_ts';
const ACTIVE_PEER_COLUMNS =
  'p.name, p.port, p.lastSentVersion AS "lastSentVersion", p.lastPokeSucceededAt AS "lastPokeSucceededAt", pk.key';

/**
 * The newest mapping of the hash `hash` valid at `now` (SQL expressions): one probe of the (lookup_hash, ts, id, …)
 * index.
 */
const newestMapping = (hash: string, now: string): string => `SELECT mxid FROM global_threepid_associations g
    WHERE g.lookup_hash = ${hash} AND g.notBefore <= ${now} AND g.notAfter > ${now}
    ORDER BY g.ts DESC, g.id DESC LIMIT 1`;

/**
 * The v2 lookup: the newest valid row of each hash, one index probe each. With `lookup_hash = ANY($1)` the planner
 * cannot estimate thousands of hashes and scans the whole table.
 */
export const LOOKUP_HASHES_SQL = `SELECT h.hash AS lookup_hash, newest.mxid
  FROM unnest($1::text[]) AS h(hash)
  CROSS JOIN LATERAL (${newestMapping('h.hash', '$2')}) AS newest`;

/**
 * The v2 lookup of several requests (read-batch.ts): LOOKUP_HASHES_SQL with each hash's own `now`, and the hash's
 * place in the list instead of the hash.
 */
export const LOOKUP_BATCH_SQL = `SELECT h.i, newest.mxid
  FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS h(hash, now, i)
  CROSS JOIN LATERAL (${newestMapping('h.hash', 'h.now')}) AS newest`;

/** Hashes per statement of a v2 lookup. */
const LOOKUP_SLICE = 2500;

/** A lookup of at most this many hashes shares its statement with others (read-batch.ts). */
const BATCHED_LOOKUP_MAX = 100;

/**
 * Statements of a read batch out at once: the reads that come meanwhile wait for it to return, and go together (more
 * at once did no better: bench/README.md).
 */
const BATCH_STATEMENTS_IN_FLIGHT = 1;

/** Keys per statement of the repeated requestToken's session read. */
const SESSION_BATCH_MAX = 500;

/**
 * The newest session of each (medium, address, clientSecret) of several requests (read-batch.ts), with the key's
 * place in the list: SQLite's LATEST_BY_KEY_SQL (src/store/sessions.ts) for each.
 */
export const LATEST_SESSIONS_BATCH_SQL = `SELECT k.i, latest.*
  FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k(medium, address, client_secret, i)
  CROSS JOIN LATERAL (
    SELECT s.id, s.medium, s.address, s.clientSecret AS "clientSecret", s.validated, s.mtime, t.token,
      t.sendAttemptNumber AS "sendAttemptNumber", m.state, m.context, m.machine_version, m.row_version, m.history
    FROM threepid_validation_sessions s
    LEFT JOIN threepid_token_auths t
      ON t.id = (SELECT max(id) FROM threepid_token_auths WHERE validationSession = s.id)
    LEFT JOIN session_machines m ON m.sid = s.id
    WHERE s.medium = k.medium AND s.address = k.address AND s.clientSecret = k.client_secret
    ORDER BY s.mtime DESC LIMIT 1
  ) AS latest`;

/** A hash looked up at a time. */
interface HashAt {
  hash: string;
  now: number;
}

export const MACHINE_COUNTS_SQL = 'SELECT state, n FROM sydent_ts_machine_counts WHERE n <> 0';
export const SYDENT_COUNTS_SQL = 'SELECT validated, n FROM sydent_ts_sydent_session_counts WHERE n <> 0';
export const CALLBACK_COUNTS_SQL = 'SELECT state, n FROM sydent_ts_callback_counts';

/** The rows not finished yet, as the partial index of migration 13 (`sydent_ts_callback_open`) names them. */
export const PG_OPEN = `state IN ('pending', 'retrying', 'delivering')`;

/**
 * The destinations with rows not finished yet, one index probe each (SQLite's OPEN_DESTINATIONS, callbacks.ts): a
 * member of a `WITH RECURSIVE`.
 */
export const PG_OPEN_DESTINATIONS = `open_destinations (destination) AS (
    SELECT (SELECT destination FROM callback_outbox WHERE ${PG_OPEN} ORDER BY destination LIMIT 1)
    UNION ALL
    SELECT (SELECT destination FROM callback_outbox WHERE ${PG_OPEN} AND destination > o.destination
            ORDER BY destination LIMIT 1)
    FROM open_destinations o WHERE o.destination IS NOT NULL
  )`;

/**
 * When the next row becomes claimable, of the destinations the worker is not busy with (SQLite's CALLBACK_NEXT_DUE_SQL): per
 * destination, the due time of its first waiting row or the end of its earliest lease, each one index probe.
 */
export const NEXT_DUE_SQL = `WITH RECURSIVE ${PG_OPEN_DESTINATIONS}
  SELECT min(least(
    (SELECT f.next_attempt_ts FROM callback_outbox f
     WHERE f.destination = o.destination AND f.${PG_OPEN} AND f.state <> 'delivering'
     ORDER BY f.next_attempt_ts LIMIT 1),
    (SELECT min(l.claimed_until) FROM callback_outbox l
     WHERE l.destination = o.destination AND l.state = 'delivering'))) AS due
  FROM open_destinations o
  WHERE o.destination IS NOT NULL AND NOT (o.destination = ANY($1::text[]))`;

export const PEPPER_SQL = 'SELECT lookup_pepper FROM hashing_metadata ORDER BY id LIMIT 1';

/** Every peer with each of its keys (one row per key; none for a peer without keys), by name. */
export const PEERS_ALL_SQL = `SELECT p.name, p.port, p.lastSentVersion AS "lastSentVersion", p.lastPokeSucceededAt AS "lastPokeSucceededAt",
         p.active, pk.alg, pk.key
  FROM peers p LEFT JOIN peer_pubkeys pk ON pk.peername = p.name ORDER BY p.name, pk.alg`;

/** The pepper last read, reused for PEPPER_CACHE_MS; dropped when a node says it changed. */
export class PepperCache {
  private cached: { value: string; readAt: number } | null = null;

  get(now: number): string | undefined {
    return this.cached && now - this.cached.readAt < PEPPER_CACHE_MS ? this.cached.value : undefined;
  }

  set(value: string, now: number): void {
    this.cached = { value, readAt: now };
  }

  clear(): void {
    this.cached = null;
  }
}

export function pgReads(pool: pg.Pool, tokens: TokenCache, pepperCache: PepperCache = new PepperCache()): StoreReads {
  const rows = async <R extends pg.QueryResultRow>(name: string, text: string, values: unknown[] = []): Promise<R[]> =>
    (await query<R>(pool, { name, text, values })).rows;
  const one = async <R extends pg.QueryResultRow>(
    name: string,
    text: string,
    values: unknown[] = [],
  ): Promise<R | undefined> => (await rows<R>(name, text, values))[0];

  const storedPepper = async (): Promise<string> => {
    const row = await one<{ lookup_pepper: string }>('pepper', PEPPER_SQL);
    if (!row) throw new Error('no lookup pepper in the database');
    return row.lookup_pepper;
  };
  // The counts of migration 12, kept by the writes (counts.ts): a few rows, whatever the size of the outbox.
  const countCallbacks = async (): Promise<CallbackCounts> => {
    const out: CallbackCounts = { pending: 0, delivering: 0, retrying: 0, delivered: 0, abandoned: 0 };
    for (const r of await rows<{ state: keyof CallbackCounts; n: number }>('callbacks_counts', CALLBACK_COUNTS_SQL)) {
      out[r.state] = r.n;
    }
    return out;
  };

  const hashLookups = new ReadBatch<HashAt, BatchRow & { mxid: string }>(
    (keys) => rows('lookup_batch', LOOKUP_BATCH_SQL, [keys.map((k) => k.hash), keys.map((k) => k.now)]),
    { maxInFlight: BATCH_STATEMENTS_IN_FLIGHT, maxKeys: LOOKUP_SLICE },
  );
  const latestSessions = new ReadBatch<[string, string, string], BatchRow & SessionJoinRow>(
    (keys) =>
      rows('session_latest_batch', LATEST_SESSIONS_BATCH_SQL, [
        keys.map((k) => k[0]),
        keys.map((k) => k[1]),
        keys.map((k) => k[2]),
      ]),
    { maxInFlight: BATCH_STATEMENTS_IN_FLIGHT, maxKeys: SESSION_BATCH_MAX },
  );

  const lookupHashes = async (hashes: readonly string[], now: number): Promise<Map<string, string>> => {
    if (hashes.length === 0) return new Map();
    if (hashes.length <= BATCHED_LOOKUP_MAX) {
      const newest = await hashLookups.read(hashes.map((hash) => ({ hash, now })));
      const found = new Map<string, string>();
      for (let k = 0; k < hashes.length; k++) {
        const row = newest[k];
        if (row) found.set(hashes[k]!, row.mxid);
      }
      return found;
    }
    const found = new Map<string, string>();
    // A large lookup is split over several pooled connections, so PostgreSQL probes the slices on its cores.
    const slices: string[][] = [];
    for (let i = 0; i < hashes.length; i += LOOKUP_SLICE) slices.push(hashes.slice(i, i + LOOKUP_SLICE));
    const results = await Promise.all(
      slices.map((slice) =>
        rows<{ lookup_hash: string; mxid: string }>('lookup_hashes', LOOKUP_HASHES_SQL, [slice, now]),
      ),
    );
    for (const result of results) for (const r of result) found.set(r.lookup_hash, r.mxid);
    return found;
  };

  return {
    accounts: {
      accountByToken: async (token) => {
        const now = Date.now();
        const hit = tokens.get(token, now);
        if (hit) return hit;
        const row = await one<{ user_id: string; created_ts: number; consent_version: string | null }>(
          'account_by_token',
          'SELECT a.user_id, a.created_ts, a.consent_version FROM tokens t JOIN accounts a ON a.user_id = t.user_id WHERE t.token = $1',
          [token],
        );
        if (!row) return undefined;
        const account: Account = {
          userId: row.user_id,
          createdTs: row.created_ts,
          consentVersion: row.consent_version,
        };
        tokens.set(token, account, now);
        return account;
      },
      acceptedUrls: async (userId) =>
        (
          await rows<{ url: string }>('accepted_urls', 'SELECT url FROM accepted_terms_urls WHERE user_id = $1', [
            userId,
          ])
        ).map((r) => r.url),
    },
    sessions: {
      // The newest session's sid, read in the statement shared by the session reads of its turn (below). A read made
      // while that statement is out waits for the next one, so it sees what was committed before it was asked for.
      findSid: async (medium, address, clientSecret) => {
        const [row] = await latestSessions.read([[medium, address, clientSecret]]);
        return row?.id;
      },
      // One statement for the repeated requestToken, shared with the others of its turn.
      findLatest: async (medium, address, clientSecret) => {
        const [row] = await latestSessions.read([[medium, address, clientSecret]]);
        return row && storedSessionOf(row);
      },
      load: async (sid) => {
        const sydent = await one<SydentSessionRow>(
          'session_load',
          `SELECT s.id, s.medium, s.address, s.clientSecret AS "clientSecret", s.validated, s.mtime, t.token,
                  t.sendAttemptNumber AS "sendAttemptNumber"
           FROM threepid_validation_sessions s
           LEFT JOIN threepid_token_auths t ON t.validationSession = s.id
           WHERE s.id = $1 ORDER BY t.id DESC LIMIT 1`,
          [sid],
        );
        if (!sydent) return undefined;
        const machine = await one<MachineRow>(
          'session_machine',
          'SELECT state, context, machine_version, row_version, history FROM session_machines WHERE sid = $1',
          [sid],
        );
        return { sydent, machine: machine ?? null };
      },
      countByState: async () => {
        const out: Record<string, number> = {};
        // As SQLite's (src/store/sessions.ts), from the counts kept by the writes (counts.ts).
        for (const { state, n } of await rows<{ state: string; n: number }>('sessions_counts', MACHINE_COUNTS_SQL)) {
          const name = sessionStateName(state, state.startsWith('{') ? SESSION_MACHINE_VERSION : 1);
          out[name] = (out[name] ?? 0) + n;
        }
        const legacy = await rows<{ validated: number; n: number }>('sessions_legacy_counts', SYDENT_COUNTS_SQL);
        for (const { validated, n } of legacy) {
          const state = validated ? 'validated' : 'tokenSent';
          out[state] = (out[state] ?? 0) + n;
        }
        return out;
      },
    },
    associations: {
      pepper: async () => {
        const now = Date.now();
        const cached = pepperCache.get(now);
        if (cached !== undefined) return cached;
        const value = await storedPepper();
        pepperCache.set(value, now);
        return value;
      },
      storedPepper,
      lookup: async (medium, address, now) =>
        one<{ mxid: string; sgAssoc: string; ts: number }>(
          'lookup',
          `SELECT mxid, sgAssoc AS "sgAssoc", ts FROM global_threepid_associations
           WHERE medium = $1 AND address = $2 AND notBefore <= $3 AND notAfter > $3
           ORDER BY ts DESC, id DESC LIMIT 1`,
          [medium, address, now],
        ),
      lookupHashes,
      mappingsJson: async (hashes, now) => objectJson(await lookupHashes(hashes, now)),
    },
    callbacks: {
      counts: countCallbacks,
      pendingCount: async () => {
        const c = await countCallbacks();
        return c.pending + c.delivering + c.retrying;
      },
      list: async (limit = 100) => {
        const open = await rows<DebugRow>(
          'callbacks_open',
          `SELECT ${DEBUG_COLUMNS} FROM callback_outbox WHERE state IN ('pending', 'delivering', 'retrying') ORDER BY id LIMIT $1`,
          [limit],
        );
        const finished =
          open.length < limit
            ? await rows<DebugRow>(
                'callbacks_finished',
                `SELECT ${DEBUG_COLUMNS} FROM callback_outbox WHERE state IN ('delivered', 'abandoned') ORDER BY id DESC LIMIT $1`,
                [limit - open.length],
              )
            : [];
        return [...open, ...finished].map(toDebugRow);
      },
      byId: async (id) => {
        const row = await one<DebugRow>(
          'callback_by_id',
          `SELECT ${DEBUG_COLUMNS} FROM callback_outbox WHERE id = $1`,
          [id],
        );
        return row && toDebugRow(row);
      },
      nextDue: async (excludeDestinations = []) =>
        (await one<{ due: number | null }>('callbacks_next_due', NEXT_DUE_SQL, [[...excludeDestinations]]))?.due ??
        null,
    },
    invites: {
      senderOfToken: async (token) =>
        (
          await one<{ sender: string }>(
            'invite_sender',
            'SELECT sender FROM invite_tokens WHERE token = $1 ORDER BY id LIMIT 1',
            [token],
          )
        )?.sender,
      pending: (medium, address) =>
        rows<PendingInvite>(
          'invites_pending',
          'SELECT id, medium, address, room_id, sender, token FROM invite_tokens WHERE medium = $1 AND address = $2 AND sent_ts IS NULL ORDER BY id',
          [medium, address],
        ),
    },
    peers: {
      all: async () => peerRowsOf(await rows<PeerJoinRow>('peers_all', PEERS_ALL_SQL)),
      active: () =>
        rows<ActivePeer>(
          'peers_active',
          `SELECT ${ACTIVE_PEER_COLUMNS} FROM peers p JOIN peer_pubkeys pk ON pk.peername = p.name
           WHERE p.active = 1 AND pk.alg = '${PEER_KEY_ALG}' ORDER BY p.name`,
        ),
      activeByName: (name) =>
        one<ActivePeer>(
          'peer_by_name',
          `SELECT ${ACTIVE_PEER_COLUMNS} FROM peers p JOIN peer_pubkeys pk ON pk.peername = p.name
           WHERE p.name = $1 AND p.active = 1 AND pk.alg = '${PEER_KEY_ALG}'`,
          [name],
        ),
      localAfter: (afterId, limit, signedAs) =>
        signedAs === undefined
          ? rows<LocalAssociationRow>(
              'local_after',
              `SELECT id, medium, address, mxid, ts, notBefore AS "notBefore", notAfter AS "notAfter"
               FROM local_threepid_associations WHERE id > $1 ORDER BY id LIMIT $2`,
              [afterId, limit],
            )
          : rows<LocalAssociationRow>(
              'local_after_signed',
              `SELECT l.id, l.medium, l.address, l.mxid, l.ts, l.notBefore AS "notBefore", l.notAfter AS "notAfter",
                 g.sgAssoc AS "sgAssoc"
               FROM local_threepid_associations l
               LEFT JOIN global_threepid_associations g ON g.originServer = $3 AND g.originId = l.id
               WHERE l.id > $1 ORDER BY l.id LIMIT $2`,
              [afterId, limit, signedAs],
            ),
      lastLocalId: async () =>
        (await one<{ id: number | null }>('local_last_id', 'SELECT max(id) AS id FROM local_threepid_associations'))
          ?.id ?? 0,
    },
    state: async () => {
      try {
        await pool.query('SELECT 1');
        return 'ok';
      } catch {
        return 'unreachable';
      }
    },
  };
}
