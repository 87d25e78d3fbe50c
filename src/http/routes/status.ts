import type { FastifyInstance } from 'fastify';
import type { AppContext } from '../context.js';
import { V1_PREFIX, V2_PREFIX } from '../context.js';

/**
 * The spec versions this server implements. v1.18's submitToken errors and v1.15's URL-safe keys are the
 * newest behaviours we follow; query-string tokens are still accepted, so v1.20 (which removes them) is not
 * claimed.
 */
const SUPPORTED_VERSIONS = [
  'r0.1.0',
  'r0.2.0',
  'r0.2.1',
  'r0.3.0',
  ...Array.from({ length: 19 }, (_, i) => `v1.${i + 1}`),
];

/** `/versions`, and the v1/v2 status roots that answer `{}`. */
export async function statusRoutes(app: FastifyInstance, opts: { ctx: AppContext }): Promise<void> {
  app.get('/_matrix/identity/versions', async () => ({ versions: SUPPORTED_VERSIONS }));
  app.get(V2_PREFIX, async () => ({}));
  if (opts.ctx.config.general.enableV1Access) app.get(V1_PREFIX, async () => ({}));
}
