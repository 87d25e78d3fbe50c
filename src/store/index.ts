import type Database from 'better-sqlite3';
import { AccountReads, AccountWrites } from './accounts.js';
import { AssociationReads, AssociationWrites } from './associations.js';
import { CallbackReads, CallbackWrites } from './callbacks.js';
import type { ReadSnapshot } from './lookup-connection.js';
import { InviteReads, InviteWrites } from './invites.js';
import { PeerReads, PeerWrites } from './peers.js';
import { SessionReads, SessionWrites } from './sessions.js';

/** The read side of the store: prepared statements used directly where a hop through an actor costs too much. */
export interface StoreReads {
  accounts: AccountReads;
  sessions: SessionReads;
  associations: AssociationReads;
  callbacks: CallbackReads;
  invites: InviteReads;
  /** replication peers and the replication log */
  peers: PeerReads;
}

/** The write side: only the store actor holds it. */
export interface StoreWrites {
  accounts: AccountWrites;
  sessions: SessionWrites;
  callbacks: CallbackWrites;
  associations: AssociationWrites;
  invites: InviteWrites;
  /** replication: peers, cursors, inbound batches */
  peers: PeerWrites;
}

/**
 * `lookups`: the read-only connection and its read snapshot that association reads (the lookup endpoints) use
 * instead of `db` (see lookup-connection.ts).
 */
export function createReads(db: Database.Database, lookups?: { db: Database.Database; snapshot: ReadSnapshot }): StoreReads {
  return {
    accounts: new AccountReads(db),
    sessions: new SessionReads(db),
    associations: lookups ? new AssociationReads(lookups.db, lookups.snapshot) : new AssociationReads(db),
    callbacks: new CallbackReads(db),
    invites: new InviteReads(db),
    peers: new PeerReads(db),
  };
}

export function createWrites(db: Database.Database): StoreWrites {
  const callbacks = new CallbackWrites(db);
  return {
    accounts: new AccountWrites(db),
    sessions: new SessionWrites(db),
    callbacks,
    associations: new AssociationWrites(db, callbacks),
    invites: new InviteWrites(db),
    peers: new PeerWrites(db),
  };
}
