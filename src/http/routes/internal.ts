import type { FastifyInstance } from 'fastify';
import { bindThreepid, unbindThreepid } from '../../bindings/binder.js';
import { binderDeps, type AppContext } from '../context.js';
import { normalise } from './lookup.js';

const body = {
  type: 'object',
  required: ['medium', 'address', 'mxid'],
  properties: { medium: { type: 'string' }, address: { type: 'string' }, mxid: { type: 'string' } },
} as const;

interface InternalBody {
  medium: string;
  address: string;
  mxid: string;
}

/**
 * Sydent's internal API: binds and unbinds without validation, for deployments that prove ownership out of band.
 * Only on the internal listener; the stored rows, signatures and callbacks are those of a normal bind.
 */
export async function internalRoutes(app: FastifyInstance, opts: { ctx: AppContext }): Promise<void> {
  const { ctx } = opts;

  app.post<{ Body: InternalBody }>('/_matrix/identity/internal/bind', { schema: { body } }, async (req) => {
    const { medium, address, mxid } = req.body;
    return bindThreepid(binderDeps(ctx), { medium, address: normalise(medium, address) }, mxid);
  });

  app.post<{ Body: InternalBody }>('/_matrix/identity/internal/unbind', { schema: { body } }, async (req) => {
    const { medium, address, mxid } = req.body;
    await unbindThreepid(binderDeps(ctx), { medium, address: normalise(medium, address) }, mxid);
    return {};
  });
}
