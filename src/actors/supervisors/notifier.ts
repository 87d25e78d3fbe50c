import type { AnyActorRef } from 'xstate';
import { createFederationClient, fetchOpenIdUserId, type FederationClient } from '../../federation/index.js';
import { ServerKeyCache, verifyHomeserverRequest, type HomeserverRequest } from '../../federation/index.js';
import { CallbackWorker, deliverCallback } from '../../notifier/index.js';
import { CallbackReads } from '../../store/callbacks.js';
import type { SystemDeps } from '../deps.js';
import { call, supervisor, type AnyActorSystem } from '../supervisor.js';
import { askStore } from './store.js';

interface NotifierResource {
  federation: FederationClient;
  /** homeserver verify keys for VERIFY_REQUEST, made on first use (see serverKeysOf) */
  serverKeys?: ServerKeyCache;
  deps: SystemDeps;
}

/** The running supervisor's resource: also the homeserver callback (onbind) outbox worker. */
interface NotifierWithCallbacks extends NotifierResource {
  callbacks: CallbackWorker;
}

/** Requests that reach out to homeservers: everything goes through the one guarded federation client. */
export const notifierHandlers = {
  OPENID_USERINFO: (e: { serverName: string; accessToken: string }, r: NotifierResource) =>
    fetchOpenIdUserId(r.federation, e.serverName, e.accessToken),
  /** a homeserver-signed request (3pid/unbind): `{ origin }`, or RequestAuthError / FederationError */
  VERIFY_REQUEST: (e: HomeserverRequest, r: NotifierResource) => verifyHomeserverRequest(e, serverKeysOf(r)),
  /** a callback was recorded (after the bind's commit): deliver what is due now. Answers at once. */
  WAKE: (_e: Record<string, never>, r: NotifierWithCallbacks) => {
    r.callbacks.wake();
  },
  /** the callback outbox for the debug endpoint: counts by state, in-flight ids, rows (never bodies). Answers at once. */
  OUTBOX: (e: { limit?: number }, r: NotifierWithCallbacks) => r.callbacks.view(e.limit ?? 100),
};

export const askNotifier = call<typeof notifierHandlers>();

/** the key cache of VERIFY_REQUEST: fetches go through this supervisor's federation client, time is the system clock */
function serverKeysOf(r: NotifierResource): ServerKeyCache {
  r.serverKeys ??= new ServerKeyCache((server, path, maxBytes) => r.federation.getJson(server, path, maxBytes), () => r.deps.clock.now());
  return r.serverKeys;
}

/** How long shutdown waits for the federation client's open requests. */
const FEDERATION_CLOSE_WAIT_MS = 1_000;

/**
 * Owns the federation client: homeserver callbacks (onbind, with their outbox and retries), OpenID checks and
 * key fetches all leave through it, so the outbound IP guard cannot be bypassed.
 */
export const notifierSupervisor = supervisor('notifier', {
  concurrency: 16,
  open: (deps: SystemDeps, system: AnyActorSystem): NotifierWithCallbacks => {
    const federation = createFederationClient(deps.config);
    const callbacks = createCallbackWorker(deps, system, federation);
    // after the other supervisors have started: the first round asks the store
    setImmediate(() => callbacks.start());
    return { federation, deps, callbacks };
  },
  close: async ({ federation, callbacks }) => {
    // running deliveries finish or are released while the store is still up (it stops last)
    await callbacks.drain();
    // A released delivery may still be waiting for its answer; the client's own timeout ends it, shutdown does not wait.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      federation.close(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, FEDERATION_CLOSE_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
  },
  children: ({ callbacks }) => callbacks.view(0).inFlight.map((id) => ({ id: `callback:${id}`, state: 'delivering' })),
  handlers: notifierHandlers,
  immediate: ['WAKE', 'OUTBOX'],
});

/** The outbox worker: claims and records through the store actor, delivers through this supervisor's federation client. */
function createCallbackWorker(deps: SystemDeps, system: AnyActorSystem, federation: FederationClient): CallbackWorker {
  const store = () => system.get('store') as AnyActorRef;
  return new CallbackWorker({
    store: {
      claim: (req) => askStore(store(), 'CALLBACKS_CLAIM', req),
      delivered: (id, now, deleteInviteTokens) => askStore(store(), 'CALLBACK_DELIVERED', { id, now, deleteInviteTokens }),
      retry: (id, claimedUntil, nextAttemptTs, lastError) =>
        askStore(store(), 'CALLBACK_RETRY', { id, claimedUntil, nextAttemptTs, lastError }),
      abandon: (id, claimedUntil, lastError) => askStore(store(), 'CALLBACK_ABANDON', { id, claimedUntil, lastError }),
      release: (id, claimedUntil) => askStore(store(), 'CALLBACK_RELEASE', { id, claimedUntil }),
      purge: (now) => askStore(store(), 'CALLBACKS_PURGE', { now }),
    },
    reads: new CallbackReads(deps.db),
    deliver: (row) => deliverCallback(federation, row),
    now: () => deps.clock.now(),
    log: deps.log,
    deleteInviteTokens: deps.config.general.deleteTokensOnBind,
    inspect: deps.inspect,
  });
}
