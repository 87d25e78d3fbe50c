import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';

/** Polled every few seconds by load balancers and monitors: their lines are logged at debug, not info. */
const QUIET_ROUTE = { requestLog: 'debug' } as const;

/**
 * `GET /health`: the process answers. `GET /ready`: it can serve (database, supervisors, not draining), else 503
 * with what is wrong, so a load balancer stops sending before the listeners close.
 */
export async function healthRoutes(app: FastifyInstance, opts: { ctx: AppContext }): Promise<void> {
  const { readiness } = opts.ctx;
  app.get('/health', { config: QUIET_ROUTE }, async () => ({ status: 'alive' }));
  app.get('/ready', { config: QUIET_ROUTE }, async (_req, reply) => {
    const report = await readiness.report();
    return reply.code(report.ready ? 200 : 503).send(report);
  });
}
