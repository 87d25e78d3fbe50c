import type { FastifyInstance } from 'fastify';
import type { Logger } from '../log.js';
import { createApp } from './app.js';
import type { AppContext } from './context.js';
import { debugRoutes } from './routes/debug.js';
import { internalRoutes } from './routes/internal.js';

/** The internal listener: reachable only where the operator binds it (loopback by default). */
export async function createInternalApi(ctx: AppContext, log: Logger): Promise<FastifyInstance> {
  const app = createApp({ log });
  await app.register(debugRoutes, { ctx });
  await app.register(internalRoutes, { ctx });
  return app;
}
