import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { askNotifier } from '../../actors/supervisors/notifier.js';
import { askReplication } from '../../actors/supervisors/replication.js';
import { askSessions } from '../../actors/supervisors/sessions.js';
import { sameSecret } from '../../machines/validation-session.js';
import { toMermaid } from '../../machines/export.js';
import { MACHINES } from '../../machines/index.js';
import { redactSessionContext } from '../../sessions/redact.js';
import { hookList } from '../app.js';
import { tokenFromRequest } from '../auth.js';
import type { AppContext } from '../context.js';
import { errors } from '../errors.js';
import { DEBUG_PAGE } from '../debug/page.js';

const require = createRequire(import.meta.url);

declare module 'fastify' {
  interface FastifyContextConfig {
    /** a debug route that holds no data (the page, its renderer): served without `internalapi.admin_token` */
    withoutAdminToken?: boolean;
  }
}

/** Live counts per machine state, for the page's diagrams. */
export type MachineCounts = Record<string, () => Record<string, number>>;

/**
 * Live state for operators, on the internal listener only, optionally behind `internalapi.admin_token`.
 * Never secrets: no tokens, client secrets, keys or 3PID addresses.
 */
export async function debugRoutes(app: FastifyInstance, opts: { ctx: AppContext; counts?: MachineCounts }): Promise<void> {
  const { ctx } = opts;
  requireAdminToken(app, ctx.config.http.internalAdminToken);

  const counts: MachineCounts = {
    'validation-session': () => ctx.reads.sessions.countByState(),
    callback: () => ({ ...ctx.reads.callbacks.counts() }),
    ...opts.counts,
  };
  const diagrams = Object.entries(MACHINES).map(([name, { machine }]) => ({
    name,
    mermaid: toMermaid(machine),
    states: Object.keys(machine.states),
  }));
  let mermaidJs: Buffer | undefined;

  // The page itself and the renderer hold no data; everything they show is fetched with the token.
  const open = { config: { withoutAdminToken: true } };
  app.get('/_sydent/debug/', open, async (_req, reply) => reply.type('text/html; charset=utf-8').send(DEBUG_PAGE));
  app.get('/_sydent/debug/assets/mermaid.min.js', open, async (_req, reply) => {
    mermaidJs ??= fs.readFileSync(require.resolve('mermaid/dist/mermaid.min.js'));
    return reply.type('text/javascript; charset=utf-8').header('cache-control', 'max-age=3600').send(mermaidJs);
  });

  app.get('/_sydent/debug/machines', async () => ({
    machines: diagrams.map((d) => ({ ...d, counts: counts[d.name]?.() ?? {} })),
  }));

  app.get('/_sydent/debug/actors', async () => ({ actors: await ctx.system.describe() }));

  app.get('/_sydent/debug/sessions', async () => ({ byState: ctx.reads.sessions.countByState() }));

  app.get<{ Params: { sid: string } }>('/_sydent/debug/sessions/:sid', async (req) => {
    const sid = /^\d{1,10}$/.test(req.params.sid) ? Number(req.params.sid) : null;
    const found = sid === null ? undefined : await askSessions(ctx.system.get('sessions'), 'INSPECT', { sid });
    if (!found) throw errors.notFound('No such session');
    return { sid: String(sid), state: found.state, context: redactSessionContext(found.context), transitions: found.history };
  });

  app.get<{ Querystring: { limit?: string } }>('/_sydent/debug/callbacks', async (req) => {
    const limit = Math.min(1000, Math.max(1, Number(req.query.limit ?? 100) || 100));
    return askNotifier(ctx.system.get('notifier'), 'OUTBOX', { limit });
  });

  // Replication: every peer with its state (idle, pushing, backingOff; inactive, noKey, notStarted, disabled),
  // cursor, backlog, last error and next retry. POST …/retry ends the backoff of every peer (or of `?peer=NAME`).
  app.get('/_sydent/debug/replication', async () => askReplication(ctx.system.get('replication'), 'VIEW', {}));
  app.post<{ Querystring: { peer?: string } }>('/_sydent/debug/replication/retry', async (req) => ({
    retried: await askReplication(ctx.system.get('replication'), 'RETRY', req.query.peer ? { name: req.query.peer } : {}),
  }));
}

/**
 * With `internalapi.admin_token` set, every route of this plugin but the open ones wants the token. The check
 * is attached to each route as it is registered, so it follows the route the router matched: the raw URL
 * (percent-encoded, or in absolute form) never decides whether it runs.
 */
function requireAdminToken(app: FastifyInstance, adminToken: string): void {
  if (!adminToken) return;
  app.addHook('onRoute', (route) => {
    if (route.config?.withoutAdminToken) return;
    const hook: onRequestHookHandler = (req, _reply, done) => {
      const given = tokenFromRequest(req);
      if (!given || !sameSecret(given, adminToken)) throw errors.unauthorized();
      done();
    };
    // A new array, never a push: fastify copies a GET route's options for its HEAD route, which gets its own hook.
    route.onRequest = [hook, ...hookList(route.onRequest)];
  });
}
