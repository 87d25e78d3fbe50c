import type Database from 'better-sqlite3';
import { AccountWrites, TokenCache } from './accounts.js';
import { AssociationWrites } from './associations.js';
import { CallbackWrites } from './callbacks.js';
import { InviteWrites } from './invites.js';
import { PeerWrites } from './peers.js';
import { SessionWrites } from './sessions.js';

export type { StoreReads } from './reads.js';

/** The write side of the SQLite engine: only the store supervisor holds it, and runs it inside its group commits. */
export interface StoreWrites {
  accounts: AccountWrites;
  sessions: SessionWrites;
  callbacks: CallbackWrites;
  associations: AssociationWrites;
  invites: InviteWrites;
  /** replication: peers, cursors, inbound batches */
  peers: PeerWrites;
}

/** `tokens`: the access-token cache the reads share, so a logout or consent here is seen by the next read at once. */
export function createWrites(db: Database.Database, tokens: TokenCache = new TokenCache()): StoreWrites {
  const callbacks = new CallbackWrites(db);
  return {
    accounts: new AccountWrites(db, tokens),
    sessions: new SessionWrites(db),
    callbacks,
    associations: new AssociationWrites(db, callbacks),
    invites: new InviteWrites(db),
    peers: new PeerWrites(db),
  };
}
