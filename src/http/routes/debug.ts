import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';

/** Live state for operators, on the internal listener only. Never secrets. */
export async function debugRoutes(app: FastifyInstance, opts: { ctx: AppContext }): Promise<void> {
  app.get('/_sydent/debug/actors', async () => ({ actors: await opts.ctx.system.describe() }));
}
