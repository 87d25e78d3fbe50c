import type { FastifyInstance, FastifyRequest } from 'fastify';
import { askNotifier } from '../../actors/supervisors/notifier.js';
import { unbindThreepid } from '../../bindings/binder.js';
import { FederationError, isValidUserId, RequestAuthError } from '../../federation/index.js';
import { binderDeps, type AppContext, type RouteOptions } from '../context.js';
import { errors, MatrixError } from '../errors.js';
import { clientSecret } from '../validate.js';
import { normalise } from './lookup.js';
import { sessionEvent, validatedSessionReply } from './validation-replies.js';

const unbindBody = {
  type: 'object',
  required: ['mxid', 'threepid'],
  properties: {
    mxid: { type: 'string' },
    threepid: { type: 'object' },
    sid: { type: ['string', 'integer'] },
    client_secret: { type: 'string' },
  },
} as const;

interface UnbindBody {
  mxid: string;
  threepid: { medium?: unknown; address?: unknown };
  sid?: string | number;
  client_secret?: string;
}

/**
 * Unbinding, with one of the spec's two proofs and no access token: a validated session for the same 3PID,
 * or a request signed by the homeserver that owns the mxid.
 */
export async function unbindRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx } = opts;

  app.post<{ Body: UnbindBody }>('/3pid/unbind', { schema: { body: unbindBody } }, async (req) => {
    const { mxid, threepid } = req.body;
    if (typeof threepid.medium !== 'string' || typeof threepid.address !== 'string') {
      throw new MatrixError(400, 'M_MISSING_PARAMS', 'Threepid lacks medium / address');
    }
    if (!isValidUserId(mxid)) throw errors.invalidParam('mxid must be a Matrix user ID (@localpart:server.name)');
    const target = { medium: threepid.medium, address: normalise(threepid.medium, threepid.address) };

    if (req.body.sid !== undefined && req.body.client_secret !== undefined) {
      await proveBySession(ctx, req.body.sid, clientSecret(req.body.client_secret), target);
    } else {
      const origin = await proveByHomeserver(ctx, req);
      if (!mxid.endsWith(`:${origin}`)) throw errors.forbidden('Origin server name does not match mxid');
    }

    await unbindThreepid(binderDeps(ctx), target, mxid);
    return {};
  });
}

async function proveBySession(
  ctx: AppContext,
  rawSid: string | number,
  secret: string,
  target: { medium: string; address: string },
): Promise<void> {
  const outcome = await sessionEvent(ctx, rawSid, { type: 'CHECK_VALIDATED', clientSecret: secret, now: ctx.clock.now() });
  const session = validatedSessionReply(outcome);
  if (session.medium !== target.medium || session.address !== target.address) {
    throw errors.forbidden('Provided session information does not match medium/address combo');
  }
}

/** The X-Matrix signature of the homeserver, checked against its published keys: answers its server name. */
async function proveByHomeserver(ctx: AppContext, req: FastifyRequest<{ Body: UnbindBody }>): Promise<string> {
  try {
    const { origin } = await askNotifier(ctx.system.get('notifier'), 'VERIFY_REQUEST', {
      method: req.method,
      uri: req.url,
      destinationIs: ctx.identity.serverName,
      content: req.body,
      // Every Authorization header: Node joins repeated ones otherwise.
      authorization: req.raw.headersDistinct['authorization'] ?? [],
    });
    return origin;
  } catch (error) {
    if (error instanceof RequestAuthError) {
      if (error.kind === 'invalid_origin') throw errors.invalidParam(error.message);
      throw new MatrixError(401, 'M_FORBIDDEN', error.message);
    }
    if (error instanceof FederationError) {
      throw errors.unknown(`Unable to contact the Matrix homeserver to authenticate request (${error.message})`);
    }
    throw error;
  }
}
