import type { StoreEngine, StoreWriteOps, WriteRequest } from '../../store/engine.js';
import { loadedPgEngine } from '../../store/pg/load.js';
import { SqliteStore } from '../../store/sqlite-store.js';
import type { SystemDeps } from '../deps.js';
import type { SupervisorEnv } from '../facade.js';
import { supervisor, type RequestContext } from '../supervisor.js';

interface StoreResource {
  engine: StoreEngine;
}

type Op = keyof StoreWriteOps;

/** The handler of one write: the engine records it within the request's deadline. */
function op<K extends Op>(name: K) {
  return (e: Parameters<StoreWriteOps[K]>[0], r: StoreResource, q: RequestContext): ReturnType<StoreWriteOps[K]> => {
    const run = r.engine.writes[name] as (payload: unknown, req: WriteRequest) => ReturnType<StoreWriteOps[K]>;
    // The context itself: the engine checks whether the caller gave up without making a signal.
    return run(e, q);
  };
}

/**
 * Every write, by facade method (`facades.stores.bind(...)`). Payloads are plain data; the engine only records
 * them (the SQL lives in its table modules), checking what the caller saw where it matters (a bind's pepper and
 * invites, a session's row version). Each is documented on StoreWriteOps (src/store/engine.ts).
 */
export const storeHandlers = {
  registerAccount: op('registerAccount'),
  logout: op('logout'),
  acceptTerms: op('acceptTerms'),
  createSession: op('createSession'),
  saveSession: op('saveSession'),
  deleteOldSessions: op('deleteOldSessions'),
  bind: op('bind'),
  bindSession: op('bindSession'),
  unbind: op('unbind'),
  storeInvite: op('storeInvite'),
  discardInvite: op('discardInvite'),
  checkEphemeralKey: op('checkEphemeralKey'),
  // Replication: a peer acknowledged our log up to lastId (its cursor moves); a verified inbound batch, stored whole.
  markPeerSent: op('markPeerSent'),
  applyPush: op('applyPush'),
  // Homeserver callbacks (the notifier's outbox). A bind records its callback inside its own write; these are the
  // notifier worker's.
  enqueueCallback: op('enqueueCallback'),
  claimCallbacks: op('claimCallbacks'),
  callbackDelivered: op('callbackDelivered'),
  retryCallback: op('retryCallback'),
  abandonCallback: op('abandonCallback'),
  releaseCallback: op('releaseCallback'),
  purgeCallbacks: op('purgeCallbacks'),
  // The limits every node shares (PostgreSQL), and which node pushes to a peer.
  takeRateToken: op('takeRateToken'),
  refundRateToken: op('refundRateToken'),
  peerLease: op('peerLease'),
  holdKey: op('holdKey'),
  releaseKey: op('releaseKey'),
};

/**
 * Owns the database: opens its engine (SQLite: the write and read connections of `[db] db.file`, migrated, with a
 * lookup pepper; PostgreSQL: the pool, the database prepared before by src/server.ts), hands out the read facade;
 * closes it last at shutdown. Its handlers are the only writers. Requests are not queued here: SQLite puts each in
 * the next group commit, which serialises the writes; PostgreSQL runs each in its own transaction.
 */
export const storeSupervisor = supervisor('store', {
  concurrency: Number.POSITIVE_INFINITY,
  open: (deps: SystemDeps, env: SupervisorEnv): StoreResource => {
    const { db } = deps.config;
    // The PostgreSQL database was checked and migrated before the actors started (src/server.ts).
    const engine: StoreEngine =
      db.engine === 'postgresql' && db.url !== null
        ? loadedPgEngine().PgStore.open({
            url: db.url,
            poolSize: db.poolSize,
            log: deps.log,
            nodeName: deps.config.general.nodeName,
          })
        : SqliteStore.open(db.dbFile, { log: deps.log });
    env.provideReads(engine.reads);
    // Another node committed something our workers act on (PostgreSQL); a worker that is shutting down ignores it.
    engine.onSignal((signal, destination) => {
      const woken =
        signal === 'log'
          ? env.facades.replication.wake({})
          : env.facades.notifier.wake(destination === undefined ? {} : { destination });
      woken.catch(() => undefined);
    });
    return { engine };
  },
  close: ({ engine }) => engine.close(),
  handlers: storeHandlers,
});
