import type { FastifyInstance } from 'fastify';
import type { RouteOptions } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { clientSecret } from '../validate.js';
import { sessionEvent, validatedSessionReply } from './validation-replies.js';

const validatedQuery = {
  type: 'object',
  required: ['sid', 'client_secret'],
  properties: { sid: { type: 'string' }, client_secret: { type: 'string' } },
} as const;

/** What a validated session proves, for homeservers that validated through us. */
export async function threepidRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx, api } = opts;
  const auth = api === 'v2' ? ('terms' as const) : undefined;

  app.get<{ Querystring: { sid: string; client_secret: string } }>(
    '/3pid/getValidated3pid',
    { config: { auth }, schema: { querystring: validatedQuery } },
    async (req) => {
      const secret = clientSecret(req.query.client_secret);
      const outcome = await sessionEvent(
        ctx,
        req.query.sid,
        { type: 'CHECK_VALIDATED', clientSecret: secret, now: ctx.clock.now() },
        requestDeadline(req, ctx.config),
      );
      const session = validatedSessionReply(outcome);
      // as Sydent: the address as the session holds it (as typed, for sessions Sydent created)
      return { medium: session.medium, address: session.storedAddress, validated_at: session.validatedAt };
    },
  );
}
