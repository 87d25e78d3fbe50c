/**
 * Replication peers and the replication log, in Sydent's tables:
 *
 * - `peers` (name, port, lastSentVersion = the last local association id the peer acknowledged,
 *   lastPokeSucceededAt in ms, active) and `peer_pubkeys` (peername, alg, key): who we push to and whose pushes
 *   we accept. Sydent's operators wrote these rows by hand; `sydent-ts peers` writes them here.
 * - `local_threepid_associations` is the outbound log: every bind and unbind of this server is a row with a new,
 *   increasing id (tombstones have mxid NULL). A peer's cursor is an id in it.
 * - `global_threepid_associations` receives the inbound batches, identified by (originServer, originId).
 */
import type Database from 'better-sqlite3';

import { ASSOCIATION_LIFETIME_MS, BindConflictError } from './associations.js';

/** The algorithm of the peer keys we use (the only one Sydent knows). */
export const PEER_KEY_ALG = 'ed25519';

export interface PeerRow {
  name: string;
  /** used when no `[peer.NAME] base_replication_url` is configured; null → 1001, as Sydent */
  port: number | null;
  /** the last local association id this peer acknowledged; null before the first push */
  lastSentVersion: number | null;
  /** ms */
  lastPokeSucceededAt: number | null;
  active: boolean;
  /** alg → key text (base64 of either alphabet, or legacy hex) */
  keys: Record<string, string>;
}

/** A peer we exchange associations with: active, with an ed25519 key. */
export interface ActivePeer {
  name: string;
  port: number | null;
  lastSentVersion: number | null;
  lastPokeSucceededAt: number | null;
  /** the ed25519 public key as stored */
  key: string;
}

/** One row of the replication log (`local_threepid_associations`). */
export interface LocalAssociationRow {
  id: number;
  medium: string;
  address: string;
  /** null: a tombstone (an unbind) */
  mxid: string | null;
  ts: number | null;
  notBefore: number | null;
  notAfter: number | null;
  /**
   * with `localAfter(…, signedAs)`: the signed association of our global row for it (`sgAssoc`, as the bind stored
   * it), null when there is none (a tombstone, or a row another program wrote)
   */
  sgAssoc?: string | null;
}

/** An association received from a peer, verified and normalised (email casefolded). */
export interface ReceivedAssociation {
  originId: number;
  medium: string;
  address: string;
  /** null: a tombstone */
  mxid: string | null;
  ts: number;
  notBefore: number | null;
  notAfter: number | null;
  /** the signed association as received, for `sgAssoc` */
  sgAssoc: string;
}

export interface ApplyPushRequest {
  /** the peer's name (its certificate's common name), stored as originServer */
  originServer: string;
  /** in any order: applied by increasing originId; each binding with its `lookup_hash` under `pepperSeen` */
  associations: (ReceivedAssociation & { lookupHash: string })[];
  /** the pepper the hashes were made with: the batch is refused (BindConflictError) if it is not the stored one */
  pepperSeen: string;
}

export interface ApplyPushResult {
  inserted: number;
  /** bindings already stored under the same (originServer, originId): a repeated push */
  duplicates: number;
  tombstones: number;
  /** global rows the tombstones removed */
  deleted: number;
}

/** A peer joined with one of its keys (none: alg and key null), as both engines read them. */
export interface PeerJoinRow {
  name: string;
  port: number | null;
  lastSentVersion: number | null;
  lastPokeSucceededAt: number | null;
  active: number;
  alg: string | null;
  key: string | null;
}

export class PeerReads {
  private readonly allStmt: Database.Statement<[], PeerJoinRow>;
  private readonly activeStmt: Database.Statement<[], ActivePeer>;
  private readonly byNameStmt: Database.Statement<[string], ActivePeer>;
  private readonly afterStmt: Database.Statement<[number, number], LocalAssociationRow>;
  private readonly afterSignedStmt: Database.Statement<[string, number, number], LocalAssociationRow>;
  private readonly maxIdStmt: Database.Statement<[], { id: number | null }>;

  constructor(db: Database.Database) {
    this.allStmt = db.prepare(
      `SELECT p.name, p.port, p.lastSentVersion, p.lastPokeSucceededAt, p.active, pk.alg, pk.key
       FROM peers p LEFT JOIN peer_pubkeys pk ON pk.peername = p.name ORDER BY p.name, pk.alg`,
    );
    this.activeStmt = db.prepare(
      `SELECT p.name, p.port, p.lastSentVersion, p.lastPokeSucceededAt, pk.key
       FROM peers p JOIN peer_pubkeys pk ON pk.peername = p.name
       WHERE p.active = 1 AND pk.alg = '${PEER_KEY_ALG}' ORDER BY p.name`,
    );
    this.byNameStmt = db.prepare(
      `SELECT p.name, p.port, p.lastSentVersion, p.lastPokeSucceededAt, pk.key
       FROM peers p JOIN peer_pubkeys pk ON pk.peername = p.name
       WHERE p.name = ? AND p.active = 1 AND pk.alg = '${PEER_KEY_ALG}'`,
    );
    this.afterStmt = db.prepare(
      `SELECT id, medium, address, mxid, ts, notBefore, notAfter FROM local_threepid_associations
       WHERE id > ? ORDER BY id LIMIT ?`,
    );
    this.afterSignedStmt = db.prepare(
      `SELECT l.id, l.medium, l.address, l.mxid, l.ts, l.notBefore, l.notAfter, g.sgAssoc
       FROM local_threepid_associations l
       LEFT JOIN global_threepid_associations g ON g.originServer = ? AND g.originId = l.id
       WHERE l.id > ? ORDER BY l.id LIMIT ?`,
    );
    this.maxIdStmt = db.prepare('SELECT max(id) AS id FROM local_threepid_associations');
  }

  /** Every peer row, active or not, with its keys. */
  all(): PeerRow[] {
    return peerRowsOf(this.allStmt.all());
  }

  /** The peers we push to and accept pushes from: active, with an ed25519 key. */
  active(): ActivePeer[] {
    return this.activeStmt.all();
  }

  /** The active peer of that name with its ed25519 key (Sydent's getPeerByName), for an inbound push. */
  activeByName(name: string): ActivePeer | undefined {
    return this.byNameStmt.get(name);
  }

  /**
   * The replication log after `afterId`, oldest first; with `signedAs` (our server name), each row with the signed
   * association our bind stored for it (what a push sends, so it need not be signed again).
   */
  localAfter(afterId: number, limit: number, signedAs?: string): LocalAssociationRow[] {
    return signedAs === undefined
      ? this.afterStmt.all(afterId, limit)
      : this.afterSignedStmt.all(signedAs, afterId, limit);
  }

  /** The newest log id (0 when the log is empty). */
  lastLocalId(): number {
    return this.maxIdStmt.get()?.id ?? 0;
  }
}

export interface PeerUpsert {
  name: string;
  /** ed25519 public key, as it will be stored (base64, or legacy hex) */
  key: string;
  /** null leaves Sydent's default (1001) */
  port: number | null;
}

export class PeerWrites {
  private readonly insertPeer: Database.Statement<[string, number | null]>;
  private readonly updatePeer: Database.Statement<[number | null, string]>;
  private readonly upsertKey: Database.Statement<[string, string, string]>;
  private readonly deleteKeys: Database.Statement<[string]>;
  private readonly deletePeer: Database.Statement<[string]>;
  private readonly sentStmt: Database.Statement<[number, number, string, number]>;
  private readonly insertGlobal: Database.Statement<[GlobalRowValues]>;
  private readonly deleteOlder: Database.Statement<[string, string, number]>;
  private readonly pepperStmt: Database.Statement<[], { lookup_pepper: string }>;

  constructor(private readonly db: Database.Database) {
    this.insertPeer = db.prepare('INSERT OR IGNORE INTO peers (name, port, active) VALUES (?, ?, 1)');
    this.updatePeer = db.prepare('UPDATE peers SET port = ?, active = 1 WHERE name = ?');
    this.upsertKey = db.prepare('INSERT OR REPLACE INTO peer_pubkeys (peername, alg, key) VALUES (?, ?, ?)');
    this.deleteKeys = db.prepare('DELETE FROM peer_pubkeys WHERE peername = ?');
    this.deletePeer = db.prepare('DELETE FROM peers WHERE name = ?');
    // The cursor only moves forward: a late answer to an older push never takes it back.
    this.sentStmt = db.prepare(
      `UPDATE peers SET lastSentVersion = ?, lastPokeSucceededAt = ?
       WHERE name = ? AND (lastSentVersion IS NULL OR lastSentVersion < ?)`,
    );
    this.insertGlobal = db.prepare<[GlobalRowValues]>(
      `INSERT OR IGNORE INTO global_threepid_associations
       (medium, address, lookup_hash, mxid, ts, notBefore, notAfter, originServer, originId, sgAssoc)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    // A tombstone removes the bindings of its 3PID that are not newer than it, whatever their origin (Sydent
    // removes them all): an old unbind arriving late never takes away a newer binding.
    this.deleteOlder = db.prepare(
      'DELETE FROM global_threepid_associations WHERE medium = ? AND address = ? AND ts <= ?',
    );
    this.pepperStmt = db.prepare('SELECT lookup_pepper FROM hashing_metadata ORDER BY id LIMIT 1');
  }

  /**
   * Adds a peer, or updates its port and key and makes it active again; its cursor is kept. Returns true when
   * the peer is new.
   */
  upsert(peer: PeerUpsert): boolean {
    return this.db.transaction(() => {
      const added = this.insertPeer.run(peer.name, peer.port).changes > 0;
      if (!added) this.updatePeer.run(peer.port, peer.name);
      this.upsertKey.run(peer.name, PEER_KEY_ALG, peer.key);
      return added;
    })();
  }

  /** Removes a peer and its keys; false when there was no such peer. */
  remove(name: string): boolean {
    return this.db.transaction(() => {
      this.deleteKeys.run(name);
      return this.deletePeer.run(name).changes > 0;
    })();
  }

  /** The peer acknowledged everything up to `lastId` (after its 2xx): the cursor moves. */
  markSent(name: string, lastId: number, now: number): boolean {
    return this.sentStmt.run(lastId, now, name, lastId).changes > 0;
  }

  /**
   * Stores a verified batch from a peer in one transaction: bindings are inserted (a repeated
   * (originServer, originId) is ignored, so pushes are idempotent), tombstones remove the older bindings of
   * their 3PID. Applied by increasing originId, the order the peer made them in.
   */
  applyPush(req: ApplyPushRequest): ApplyPushResult {
    return this.db.transaction(() => {
      if (this.pepperStmt.get()?.lookup_pepper !== req.pepperSeen)
        throw new BindConflictError('the lookup pepper changed');
      const result: ApplyPushResult = { inserted: 0, duplicates: 0, tombstones: 0, deleted: 0 };
      for (const a of inOriginOrder(req.associations)) {
        if (a.mxid === null) {
          result.tombstones++;
          result.deleted += this.deleteOlder.run(a.medium, a.address, a.ts).changes;
          continue;
        }
        // better-sqlite3 binds an array's items as the statement's parameters.
        const changes = this.insertGlobal.run(globalRowOf(a, a.mxid, req.originServer)).changes;
        if (changes > 0) result.inserted++;
        else result.duplicates++;
      }
      return result;
    })();
  }
}

/** A push's associations in the order the peer made them (by increasing originId), the order they are applied in. */
export function inOriginOrder<T extends { originId: number }>(associations: readonly T[]): T[] {
  return [...associations].sort((a, b) => a.originId - b.originId);
}

/**
 * A received binding's values for `global_threepid_associations` (medium, address, lookup_hash, mxid, ts, notBefore,
 * notAfter, originServer, originId, sgAssoc), as both engines insert them.
 */
export type GlobalRowValues = [string, string, string, string, number, number, number, string, number, string];

/**
 * The global row a binding (`mxid`, which is `a.mxid`: not a tombstone) from `originServer` makes. A peer that sent
 * no validity gets Sydent's: from `ts`, for ASSOCIATION_LIFETIME_MS.
 */
export function globalRowOf(
  a: ReceivedAssociation & { lookupHash: string },
  mxid: string,
  originServer: string,
): GlobalRowValues {
  return [
    a.medium,
    a.address,
    a.lookupHash,
    mxid,
    a.ts,
    a.notBefore ?? a.ts,
    a.notAfter ?? a.ts + ASSOCIATION_LIFETIME_MS,
    originServer,
    a.originId,
    a.sgAssoc,
  ];
}

/** Joined peer rows (ordered by name) as one PeerRow per peer, its keys by algorithm. */
export function peerRowsOf(raw: Iterable<PeerJoinRow>): PeerRow[] {
  const peers = new Map<string, PeerRow>();
  for (const r of raw) {
    let peer = peers.get(r.name);
    if (!peer) {
      peer = {
        name: r.name,
        port: r.port,
        lastSentVersion: r.lastSentVersion,
        lastPokeSucceededAt: r.lastPokeSucceededAt,
        active: r.active === 1,
        keys: {},
      };
      peers.set(r.name, peer);
    }
    if (r.alg !== null && r.key !== null) peer.keys[r.alg] = r.key;
  }
  return [...peers.values()];
}
