import type { FastifyInstance, onRequestHookHandler } from 'fastify';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { sameSecret } from '../../machines/validation-session.js';
import { machineNames, toMermaid } from '../../machines/export.js';
import { MACHINES } from '../../machines/index.js';
import { redactSessionContext } from '../../sessions/redact.js';
import { hookList } from '../app.js';
import { tokenFromRequest } from '../auth.js';
import type { AppContext } from '../context.js';
import { errors } from '../errors.js';
import { DEBUG_PAGE } from '../debug/page.js';
import { storedSid } from '../validate.js';
import { VERSION } from '../../version.js';

const require = createRequire(import.meta.url);

declare module 'fastify' {
  interface FastifyContextConfig {
    /** a debug route that holds no data (the page, its renderer): served without `internalapi.admin_token` */
    withoutAdminToken?: boolean;
  }
}

/** Live counts per machine state, for the page's diagrams. */
export type MachineCounts = Record<string, () => Record<string, number> | Promise<Record<string, number>>>;

/**
 * Live state for operators, on the internal listener only, optionally behind `internalapi.admin_token`.
 * Never secrets: no tokens, client secrets, keys or 3PID addresses.
 */
export async function debugRoutes(
  app: FastifyInstance,
  opts: { ctx: AppContext; counts?: MachineCounts },
): Promise<void> {
  const { ctx } = opts;
  const { facades } = ctx;
  requireAdminToken(app, ctx.config.http.internalAdminToken);
  // Behind a load balancer every answer says which node gave it.
  const node = ctx.config.general.nodeName;
  app.addHook('onSend', async (_req, reply) => {
    reply.header('x-sydent-node', node);
  });

  // Uptime of this server, on the monotonic clock (the injected clock is for the protocol's time, which tests move).
  const startedMs = performance.now();
  const peerCounts = async () => {
    const byState: Record<string, number> = {};
    for (const p of (await facades.replication.view({})).peers) byState[p.state] = (byState[p.state] ?? 0) + 1;
    return byState;
  };
  const counts: MachineCounts = {
    'validation-session': () => ctx.reads.sessions.countByState(),
    callback: async () => ({ ...(await ctx.reads.callbacks.counts()) }),
    peer: peerCounts,
    ...opts.counts,
  };
  const names = Object.fromEntries(
    Object.entries(MACHINES).map(([name, { machine }]) => [name, machineNames(machine)]),
  );
  let mermaidJs: Buffer | undefined;

  // The page itself and the renderer hold no data; everything they show is fetched with the token.
  const open = { config: { withoutAdminToken: true } };
  app.get('/_sydent/debug/', open, async (_req, reply) => reply.type('text/html; charset=utf-8').send(DEBUG_PAGE));
  app.get('/_sydent/debug/assets/mermaid.min.js', open, async (_req, reply) => {
    mermaidJs ??= fs.readFileSync(require.resolve('mermaid/dist/mermaid.min.js'));
    return reply.type('text/javascript; charset=utf-8').header('cache-control', 'max-age=3600').send(mermaidJs);
  });

  // Each machine as a diagram with its live counts, in the machine's own state and event names.
  app.get('/_sydent/debug/machines', async () => ({
    machines: await Promise.all(
      Object.entries(MACHINES).map(async ([name, { machine }]) => {
        const live = (await counts[name]?.()) ?? {};
        return { name, ...names[name]!, counts: live, mermaid: toMermaid(machine, live) };
      }),
    ),
  }));

  // What the page shows first: who this is, and the numbers an operator looks for. Bounded: counts, not lists.
  app.get('/_sydent/debug/summary', async () => {
    const [actors, outbox, replication] = await Promise.all([
      ctx.system.describe(),
      facades.notifier.outbox({ limit: 0 }),
      facades.replication.view({}),
    ]);
    const byState = await ctx.reads.sessions.countByState();
    const uptimeSeconds = Math.floor((performance.now() - startedMs) / 1000);
    return {
      server: {
        name: ctx.config.general.serverName,
        version: VERSION,
        node: { name: node, hostname: os.hostname(), pid: process.pid, nodeVersion: process.version },
        startedAt: new Date(Date.now() - uptimeSeconds * 1000).toISOString(),
        uptimeSeconds,
      },
      sessions: { total: Object.values(byState).reduce((a, b) => a + b, 0), byState },
      actors,
      callbacks: { pending: outbox.pending, counts: outbox.counts },
      replication: {
        enabled: replication.enabled,
        reason: replication.reason,
        peers: replication.peers.map((p) => ({
          name: p.name,
          state: p.state,
          backlog: p.backlog,
          failures: p.failures,
          nextRetryTs: p.nextRetryTs,
        })),
      },
    };
  });

  app.get('/_sydent/debug/actors', async () => ({ actors: await ctx.system.describe() }));

  // The actors below one actor, a page at a time: there is one per live session.
  app.get<{ Params: { systemId: string }; Querystring: { offset?: string; limit?: string } }>(
    '/_sydent/debug/actors/:systemId',
    async (req) => {
      const offset = whole(req.query.offset, 0, 'offset');
      const limit = whole(req.query.limit, 100, 'limit');
      if (limit < 1 || limit > 1000) throw errors.invalidParam('limit must be between 1 and 1000');
      const page = await ctx.system.children(req.params.systemId, offset, limit);
      if (!page) throw errors.notFound('No such actor');
      return { systemId: req.params.systemId, offset, limit, ...page };
    },
  );

  app.get('/_sydent/debug/sessions', async () => ({ byState: await ctx.reads.sessions.countByState() }));

  app.get<{ Params: { sid: string } }>('/_sydent/debug/sessions/:sid', async (req) => {
    const sid = storedSid(req.params.sid);
    const found = sid === null ? undefined : await facades.sessions.inspect({ sid });
    if (!found) throw errors.notFound('No such session');
    // States and events as the machine, and so the page's diagram, names them.
    return {
      sid: String(sid),
      machine: 'validation-session',
      state: found.state,
      context: redactSessionContext(found.context),
      transitions: found.history,
    };
  });

  app.get<{ Querystring: { limit?: string } }>('/_sydent/debug/callbacks', async (req) => {
    const limit = Math.min(1000, Math.max(1, Number(req.query.limit ?? 100) || 100));
    return facades.notifier.outbox({ limit });
  });

  // Replication: every peer with its state (idle, pushing, backingOff; inactive, noKey, notStarted, disabled),
  // cursor, backlog, last error and next retry. POST …/retry ends the backoff of every peer (or of `?peer=NAME`).
  app.get('/_sydent/debug/replication', async () => ({ node, ...(await facades.replication.view({})) }));
  app.post<{ Querystring: { peer?: string } }>('/_sydent/debug/replication/retry', async (req) => ({
    retried: await facades.replication.retry(req.query.peer ? { name: req.query.peer } : {}),
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

/** A non-negative whole number from the query string, or the default when absent. */
function whole(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!/^\d{1,9}$/.test(value)) throw errors.invalidParam(`${name} must be a whole number`);
  return Number(value);
}
