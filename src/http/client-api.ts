import type { FastifyInstance } from 'fastify';
import type { Logger } from '../log.js';
import { BODY_LIMIT, createApp } from './app.js';
import type { HttpListener } from './http-listener.js';
import { clientTrustProxy } from './listeners.js';
import { fastLane } from './fast-lane.js';
import { installAuth } from './auth.js';
import { accountRoutes } from './routes/account.js';
import { bindRoutes } from './routes/bind.js';
import { emailLaneRoutes, emailRoutes } from './routes/email.js';
import { inviteRoutes } from './routes/invites.js';
import { lookupLaneRoute, lookupRoutes } from './routes/lookup.js';
import { msisdnLaneRoutes, msisdnRoutes } from './routes/msisdn.js';
import { unbindRoutes } from './routes/unbind.js';
import { threepidRoutes } from './routes/threepid.js';
import { termsRoutes } from './routes/terms.js';
import { V1_PREFIX, V2_PREFIX, type AppContext } from './context.js';
import { pubkeyRoutes } from './routes/pubkey.js';
import { statusRoutes } from './routes/status.js';
import { healthRoutes } from './routes/health.js';

/** The client API listener: v2 always, v1 when `enable_v1_access`. */
export async function createClientApi(
  ctx: AppContext,
  parentLog: Logger,
  listener?: HttpListener,
): Promise<FastifyInstance> {
  const { http, general } = ctx.config;
  const log = parentLog.child({ listener: 'client' });
  const trustProxy = clientTrustProxy(http);
  const apis = general.enableV1Access ? (['v2', 'v1'] as const) : (['v2'] as const);
  const mounts = apis.map((api) => ({ api, prefix: api === 'v2' ? V2_PREFIX : V1_PREFIX }));
  const lane = fastLane({ ctx, log, bodyLimit: BODY_LIMIT, trustProxy, metrics: ctx.metrics }, [
    lookupLaneRoute(ctx),
    ...emailLaneRoutes(ctx, mounts),
    ...msisdnLaneRoutes(ctx, mounts),
  ]);
  const app = createApp({
    log,
    trustProxy,
    metrics: ctx.metrics,
    bodyLimit: BODY_LIMIT,
    lane,
    ...(listener ? { listener } : {}),
  });
  installAuth(app, ctx);
  await app.register(statusRoutes, { ctx });
  await app.register(healthRoutes, { ctx });
  await app.register(pubkeyRoutes, { ctx, api: 'v2', prefix: V2_PREFIX });
  await app.register(accountRoutes, { ctx, api: 'v2', prefix: V2_PREFIX });
  await app.register(termsRoutes, { ctx, api: 'v2', prefix: V2_PREFIX });
  // The session endpoints exist under both APIs: v2 with token and terms, v1 without.
  for (const { api, prefix } of mounts) {
    if (api === 'v1') await app.register(pubkeyRoutes, { ctx, api, prefix });
    await app.register(emailRoutes, { ctx, api, prefix });
    await app.register(msisdnRoutes, { ctx, api, prefix });
    await app.register(threepidRoutes, { ctx, api, prefix });
    await app.register(lookupRoutes, { ctx, api, prefix });
    if (api === 'v2' || general.enableV1Associations) await app.register(bindRoutes, { ctx, api, prefix });
    await app.register(unbindRoutes, { ctx, api, prefix });
    await app.register(inviteRoutes, { ctx, api, prefix });
  }
  return app;
}
