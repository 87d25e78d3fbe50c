import { ALPHANUMERIC, randomString } from '../../crypto/index.js';
import { createFederationClient, fetchOpenIdUserId, type FederationClient } from '../../federation/index.js';
import { ServerKeyCache, verifyHomeserverRequest, type HomeserverRequest } from '../../federation/index.js';
import { CallbackWorker, deliverCallback } from '../../notifier/index.js';
import type { SystemDeps } from '../deps.js';
import type { Facades, SupervisorEnv } from '../facade.js';
import { supervisor, type RequestContext } from '../supervisor.js';

interface NotifierResource {
  federation: FederationClient;
  /** homeserver verify keys for verifyRequest, made on first use (see serverKeysOf) */
  serverKeys?: ServerKeyCache;
  deps: SystemDeps;
  stores: Facades['stores'];
  /** the homeserver callback (onbind) outbox worker */
  callbacks: CallbackWorker;
}

/** Requests that reach out to homeservers: everything goes through the one guarded federation client. */
export const notifierHandlers = {
  /**
   * account/register: the OpenID token checked with the user's homeserver, then an account and a new access token
   * for the user it vouches for. Answers the token; OpenIdError or FederationError when the homeserver did not vouch.
   */
  registerAccount: async (e: { serverName: string; openIdToken: string }, r: NotifierResource, q: RequestContext) => {
    const userId = await fetchOpenIdUserId(r.federation, e.serverName, e.openIdToken, q.signal);
    const token = randomString(64, ALPHANUMERIC);
    await r.stores.registerAccount({ userId, token, now: r.deps.clock.now() }, q);
    return token;
  },
  /** a homeserver-signed request (3pid/unbind): `{ origin }`, or RequestAuthError / FederationError */
  verifyRequest: (e: HomeserverRequest, r: NotifierResource) => verifyHomeserverRequest(e, serverKeysOf(r)),
  /**
   * a callback was recorded (after the bind's commit; `destination`: its homeserver, when one bind recorded it), or
   * another node recorded some: deliver what is due now. Answers at once.
   */
  wake: (e: { destination?: string }, r: NotifierResource) => {
    r.callbacks.wake(e.destination);
  },
  /** the callback outbox for the debug endpoint: counts by state, in-flight ids, rows (never bodies). */
  outbox: (e: { limit?: number }, r: NotifierResource) => r.callbacks.view(e.limit ?? 100),
};

/** the key cache of verifyRequest: fetches go through this supervisor's federation client, time is the system clock */
function serverKeysOf(r: NotifierResource): ServerKeyCache {
  r.serverKeys ??= new ServerKeyCache(
    (server, path, maxBytes) => r.federation.getJson(server, path, maxBytes),
    () => r.deps.clock.now(),
  );
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
  open: (deps: SystemDeps, env: SupervisorEnv): NotifierResource => {
    const { facades } = env;
    const federation = createFederationClient(deps.config);
    const callbacks = createCallbackWorker(deps, facades, federation);
    // after the other supervisors have started: the first round asks the store
    setImmediate(() => callbacks.start());
    return { federation, deps, stores: facades.stores, callbacks };
  },
  close: async ({ federation, callbacks }) => {
    // running deliveries finish or are cut off and released while the store is still up (it stops last)
    await callbacks.drain();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      federation.close(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, FEDERATION_CLOSE_WAIT_MS);
      }),
    ]);
    clearTimeout(timer);
  },
  children: ({ callbacks }) => callbacks.inFlightIds().map((id) => ({ id: `callback:${id}`, state: 'delivering' })),
  handlers: notifierHandlers,
  immediate: ['wake', 'outbox'],
});

/** The outbox worker: claims and records through the store's facade, delivers through this supervisor's federation client. */
function createCallbackWorker(deps: SystemDeps, facades: Facades, federation: FederationClient): CallbackWorker {
  const { stores } = facades;
  return new CallbackWorker({
    store: {
      claim: (req) => stores.claimCallbacks(req),
      delivered: (id, now, deleteInviteTokens) => stores.callbackDelivered({ id, now, deleteInviteTokens }),
      retry: (id, claimedUntil, nextAttemptTs, lastError) =>
        stores.retryCallback({ id, claimedUntil, nextAttemptTs, lastError }),
      abandon: (id, claimedUntil, lastError) => stores.abandonCallback({ id, claimedUntil, lastError }),
      release: (id, claimedUntil) => stores.releaseCallback({ id, claimedUntil }),
      purge: (now) => stores.purgeCallbacks({ now }),
    },
    reads: facades.reads.callbacks,
    deliver: (row, signal) => deliverCallback(federation, row, signal),
    now: () => deps.clock.now(),
    log: deps.log,
    deleteInviteTokens: deps.config.general.deleteTokensOnBind,
    claimTtlMs: deps.config.general.callbackClaimMs,
    inspect: deps.inspect,
  });
}
