import { createFederationClient, fetchOpenIdUserId, type FederationClient } from '../../federation/index.js';
import type { SystemDeps } from '../deps.js';
import { call, supervisor } from '../supervisor.js';

interface NotifierResource {
  federation: FederationClient;
  deps: SystemDeps;
}

/** Requests that reach out to homeservers: everything goes through the one guarded federation client. */
export const notifierHandlers = {
  OPENID_USERINFO: (e: { serverName: string; accessToken: string }, r: NotifierResource) =>
    fetchOpenIdUserId(r.federation, e.serverName, e.accessToken),
};

export const askNotifier = call<typeof notifierHandlers>();

/**
 * Owns the federation client: homeserver callbacks (onbind, with their outbox and retries), OpenID checks and
 * key fetches all leave through it, so the outbound IP guard cannot be bypassed.
 */
export const notifierSupervisor = supervisor('notifier', {
  concurrency: 16,
  open: (deps: SystemDeps): NotifierResource => ({ federation: createFederationClient(deps.config), deps }),
  close: ({ federation }) => federation.close(),
  handlers: notifierHandlers,
});
