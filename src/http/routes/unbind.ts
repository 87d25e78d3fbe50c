import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { UnbindProof } from '../../actors/supervisors/sessions.js';
import { FederationError, RequestAuthError } from '../../federation/index.js';
import { isValidUserId } from '../../matrix/index.js';
import type { AppContext, RouteOptions } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { errors, MatrixError } from '../errors.js';
import { clientSecret, sidNumber } from '../validate.js';
import { normaliseAddress } from '../../matrix/index.js';
import { validatedSessionReply } from './validation-replies.js';

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
    const target = { medium: threepid.medium, address: normaliseAddress(threepid.medium, threepid.address) };
    const outcome = await unbindWithProof(ctx, req, { threepid: target, mxid, proof: proofOf(ctx, req) });
    if (outcome.ok) return {};
    if ('session' in outcome) validatedSessionReply(outcome.session);
    if ('mismatch' in outcome)
      throw errors.forbidden('Provided session information does not match medium/address combo');
    throw errors.forbidden('Origin server name does not match mxid');
  });
}

/** A session (sid and client secret) when the body names one, else the homeserver's signature on this request. */
function proofOf(ctx: AppContext, req: FastifyRequest<{ Body: UnbindBody }>): UnbindProof | null {
  const { sid, client_secret: secret } = req.body;
  if (sid !== undefined && secret !== undefined) {
    const checkedSecret = clientSecret(secret);
    const number = sidNumber(sid);
    return number === null ? null : { kind: 'session', sid: number, clientSecret: checkedSecret };
  }
  return {
    kind: 'homeserver',
    request: {
      method: req.method,
      uri: req.url,
      destinationIs: ctx.identity.serverName,
      content: req.body,
      // Every Authorization header: Node joins repeated ones otherwise.
      authorization: req.raw.headersDistinct['authorization'] ?? [],
    },
  };
}

/** The unbind flow (sessions supervisor); a homeserver that cannot be asked, or refuses the signature, as Matrix errors. */
async function unbindWithProof(
  ctx: AppContext,
  req: FastifyRequest,
  args: { threepid: { medium: string; address: string }; mxid: string; proof: UnbindProof | null },
) {
  // A sid that cannot name a session proves nothing.
  if (args.proof === null) return { ok: false as const, session: undefined };
  try {
    return await ctx.facades.sessions.unbindWithProof({ ...args, proof: args.proof }, requestDeadline(req, ctx.config));
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
