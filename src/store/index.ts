import type Database from 'better-sqlite3';
import { AccountReads, AccountWrites } from './accounts.js';
import { SessionReads, SessionWrites } from './sessions.js';

/** The read side of the store: prepared statements used directly where a hop through an actor costs too much. */
export interface StoreReads {
  accounts: AccountReads;
  sessions: SessionReads;
}

/** The write side: only the store actor holds it. */
export interface StoreWrites {
  accounts: AccountWrites;
  sessions: SessionWrites;
}

export function createReads(db: Database.Database): StoreReads {
  return { accounts: new AccountReads(db), sessions: new SessionReads(db) };
}

export function createWrites(db: Database.Database): StoreWrites {
  return { accounts: new AccountWrites(db), sessions: new SessionWrites(db) };
}
