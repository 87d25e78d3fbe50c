import type { FastifyInstance } from 'fastify';
import { isValidUserId } from '../../matrix/index.js';
import type { RouteOptions } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { errors } from '../errors.js';
import { clientSecret, sidNumber } from '../validate.js';
import { validatedSessionReply } from './validation-replies.js';

const bindBody = {
  type: 'object',
  required: ['sid', 'client_secret', 'mxid'],
  properties: {
    sid: { type: ['string', 'integer'] },
    client_secret: { type: 'string' },
    mxid: { type: 'string' },
  },
} as const;

/** Publishing a validated 3PID: the answer is the association signed with our long-term key. */
export async function bindRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx, api } = opts;

  app.post<{ Body: { sid: string | number; client_secret: string; mxid: string } }>(
    '/3pid/bind',
    { config: { auth: api === 'v2' ? 'terms' : undefined }, schema: { body: bindBody } },
    async (req) => {
      const secret = clientSecret(req.body.client_secret);
      const { mxid } = req.body;
      if (api === 'v2' && req.account?.userId !== mxid) {
        throw errors.unauthorizedStatus(403, 'This user is prohibited from binding to the mxid');
      }
      if (!isValidUserId(mxid)) throw errors.invalidParam('mxid must be a Matrix user ID (@localpart:server.name)');
      const sid = sidNumber(req.body.sid);
      const result =
        sid === null
          ? { outcome: undefined, association: null }
          : await ctx.facades.sessions.bindSession(
              { sid, clientSecret: secret, mxid },
              requestDeadline(req, ctx.config),
            );
      validatedSessionReply(result.outcome);
      return result.association;
    },
  );
}
