import type { FastifyInstance } from 'fastify';
import { FederationError, OpenIdError } from '../../federation/index.js';
import { isValidServerName } from '../../matrix/index.js';
import { accountOf } from '../auth.js';
import type { RouteOptions } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { errors } from '../errors.js';

const registerBody = {
  type: 'object',
  required: ['access_token', 'matrix_server_name'],
  properties: {
    access_token: { type: 'string', minLength: 1 },
    matrix_server_name: { type: 'string', minLength: 1 },
    token_type: { type: 'string' },
    expires_in: { type: 'number' },
  },
} as const;

/**
 * Longer than any OpenID token a homeserver issues (Synapse's are 24 characters): refused without asking, as the
 * homeserver would refuse a URL that long, and its refusal would read as its failure (5xx) instead of the client's.
 */
const MAX_OPENID_TOKEN_LENGTH = 4096;

interface RegisterBody {
  access_token: string;
  matrix_server_name: string;
}

/** v2 accounts: made from an OpenID token the user's homeserver vouches for; read and logged out by token. */
export async function accountRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx } = opts;

  app.post<{ Body: RegisterBody }>('/account/register', { schema: { body: registerBody } }, async (req) => {
    const serverName = req.body.matrix_server_name.toLowerCase();
    const allow = ctx.config.general.homeserverAllowList;
    if (allow.length > 0 && !allow.includes(serverName)) {
      throw errors.unauthorizedStatus(403, 'This homeserver is not authorized to access this server.');
    }
    if (!isValidServerName(serverName)) {
      throw errors.invalidParam('matrix_server_name must be a valid Matrix server name (IP address or hostname)');
    }
    if (req.body.access_token.length > MAX_OPENID_TOKEN_LENGTH)
      throw errors.unknownToken('The OpenID token is too long');
    const token = await ctx.facades.notifier
      .registerAccount({ serverName, openIdToken: req.body.access_token }, requestDeadline(req, ctx.config))
      .catch((error: unknown) => {
        throw openIdFailure(error);
      });
    // `token` is the spec's name; Sydent released with `access_token` and clients still read it.
    return { token, access_token: token };
  });

  app.get('/account', { config: { auth: 'terms' } }, async (req) => ({ user_id: accountOf(req).userId }));

  app.post('/account/logout', { config: { auth: 'token' } }, async (req) => {
    const removed = await ctx.facades.stores.logout({ token: req.accessToken ?? '' }, requestDeadline(req, ctx.config));
    if (!removed) throw errors.unauthorized();
    return {};
  });
}

/** What the user is told when their homeserver could not vouch for the OpenID token. */
function openIdFailure(error: unknown): Error {
  if (error instanceof OpenIdError) {
    return error.kind === 'rejected' ? errors.unknownToken(error.message) : errors.unknown(error.message);
  }
  if (error instanceof FederationError) return errors.unknown(error.message);
  return error instanceof Error ? error : new Error(String(error));
}
