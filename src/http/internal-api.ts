import type { FastifyInstance } from 'fastify';
import type { Logger } from '../log.js';
import { createApp } from './app.js';
import type { AppContext } from './context.js';
import type { HttpListener } from './http-listener.js';
import { installInternalGuard } from './internal-guard.js';
import { debugRoutes } from './routes/debug.js';
import { internalRoutes } from './routes/internal.js';

/**
 * The internal listener: reachable only where the operator binds it (loopback by default), and closed to web
 * pages (no CORS, JSON bodies only, its own Host only; http/internal-guard.ts).
 */
export async function createInternalApi(
  ctx: AppContext,
  log: Logger,
  listener?: HttpListener,
): Promise<FastifyInstance> {
  const app = createApp({
    log: log.child({ listener: 'internal' }),
    metrics: ctx.metrics,
    cors: false,
    ...(listener ? { listener } : {}),
  });
  installInternalGuard(app, { allowedHosts: ctx.config.http.internalAllowedHosts });
  await app.register(debugRoutes, { ctx });
  await app.register(internalRoutes, { ctx });
  return app;
}
