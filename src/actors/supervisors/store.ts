import type Database from 'better-sqlite3';
import { closeDatabase } from '../../store/database.js';
import { createWrites, type StoreWrites } from '../../store/index.js';
import type { SessionWrite } from '../../store/sessions.js';
import type { SystemDeps } from '../deps.js';
import { call, supervisor } from '../supervisor.js';

interface StoreResource {
  db: Database.Database;
  writes: StoreWrites;
}

/** Every write the store performs, by request type. Handlers are thin: the SQL lives in the table modules. */
export const storeHandlers = {
  ACCOUNT_REGISTER: (e: { userId: string; token: string; now: number }, r: StoreResource) =>
    r.writes.accounts.register(e.userId, e.token, e.now),
  ACCOUNT_LOGOUT: (e: { token: string }, r: StoreResource) => r.writes.accounts.logout(e.token),
  TERMS_ACCEPT: (
    e: { userId: string; urls: string[]; masterVersion: string | null; isComplete: (accepted: string[]) => boolean },
    r: StoreResource,
  ) => r.writes.accounts.acceptTerms(e.userId, e.urls, e.masterVersion, e.isComplete),
  SESSION_NEW_SID: (_e: Record<string, never>, r: StoreResource) => r.writes.sessions.newSid(),
  SESSION_CREATE: (e: { medium: string; clientSecret: string; write: SessionWrite }, r: StoreResource) =>
    r.writes.sessions.create(e.medium, e.clientSecret, e.write),
  SESSION_SAVE: (e: { write: SessionWrite; expectedVersion: number | null }, r: StoreResource) =>
    r.writes.sessions.save(e.write, e.expectedVersion),
  SESSIONS_DELETE_OLD: (e: { cutoffMs: number }, r: StoreResource) => r.writes.sessions.deleteOlderThan(e.cutoffMs),
};

export const askStore = call<typeof storeHandlers>();

/**
 * The only writer of SQLite. Requests run one at a time, so a write transaction never interleaves with another;
 * reads on hot paths use prepared statements on the same connection directly. Closing it closes the database.
 */
export const storeSupervisor = supervisor('store', {
  concurrency: 1,
  open: (deps: SystemDeps): StoreResource => ({ db: deps.db, writes: createWrites(deps.db) }),
  close: ({ db }) => closeDatabase(db),
  handlers: storeHandlers,
});
