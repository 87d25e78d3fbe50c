import type { FastifyInstance } from 'fastify';
import { askSessions } from '../../actors/supervisors/sessions.js';
import { redactSessionContext } from '../../sessions/redact.js';
import type { AppContext } from '../context.js';
import { errors } from '../errors.js';

/** Live state for operators, on the internal listener only. Never secrets. */
export async function debugRoutes(app: FastifyInstance, opts: { ctx: AppContext }): Promise<void> {
  const { ctx } = opts;

  app.get('/_sydent/debug/actors', async () => ({ actors: await ctx.system.describe() }));

  app.get('/_sydent/debug/sessions', async () => ({ byState: ctx.reads.sessions.countByState() }));

  app.get<{ Params: { sid: string } }>('/_sydent/debug/sessions/:sid', async (req) => {
    const sid = /^\d{1,10}$/.test(req.params.sid) ? Number(req.params.sid) : null;
    const found = sid === null ? undefined : await askSessions(ctx.system.get('sessions'), 'INSPECT', { sid });
    if (!found) throw errors.notFound('No such session');
    return { sid: String(sid), state: found.state, context: redactSessionContext(found.context), transitions: found.history };
  });
}
