import type { FastifyInstance } from 'fastify';
import { casefold } from '../../matrix/index.js';
import type { AppContext, RouteOptions } from '../context.js';
import { laneRequestOf, laneRoutesAt, type ApiMount, type LaneRequest, type LaneRoute } from '../fast-lane.js';
import { errors } from '../errors.js';
import { bodyFields, clientSecret, emailAddress, nextLink, sendAttempt } from '../validate.js';
import { sessionForToken, type TokenRefusals } from './request-token.js';
import { submitTokenRoutes } from './submit-token.js';

/** The fields of a requestToken body, in the order a missing one is reported; the first two are strings. */
const REQUIRED = ['client_secret', 'email', 'send_attempt'] as const;
const STRINGS = ['client_secret', 'email'] as const;

const EMAIL_REFUSALS: TokenRefusals = { sendFailed: () => errors.emailSendError(), limited: 'Too many requests' };

const FAILURE_PAGE = 'Verification failed: you may need to request another verification email';

const REQUEST_TOKEN = '/validate/email/requestToken';

/**
 * `POST …/validate/email/requestToken`, once authenticated (v2): the body checked, then the session's sid
 * (request-token.ts: a repeat from the session's rows, any other from the session once the mail is sent). Shared by
 * the fastify route and the fast lane, so both answer every body alike.
 */
async function requestEmailToken(
  ctx: AppContext,
  body: unknown,
  request: LaneRequest,
  brand: string | null,
): Promise<{ sid: string }> {
  const fields = bodyFields(body, REQUIRED, STRINGS);
  const secret = clientSecret(fields['client_secret'] as string);
  const attempt = sendAttempt(fields['send_attempt']);
  const email = emailAddress(fields['email'] as string);
  const link = nextLink(fields['next_link']);
  const address = casefold(email);
  const sid = await sessionForToken(
    ctx,
    request,
    {
      medium: 'email',
      address,
      sendTo: email,
      clientSecret: secret,
      sendAttempt: attempt,
      nextLink: link,
      brand,
      requester: request.account?.userId ?? request.ip,
    },
    EMAIL_REFUSALS,
  );
  return { sid };
}

/**
 * requestToken in the client listener's fast lane (http/fast-lane.ts), under each prefix the API is mounted at: a
 * request without a query string (so without `brand`).
 */
export function emailLaneRoutes(ctx: AppContext, mounts: readonly ApiMount[]): LaneRoute[] {
  return laneRoutesAt(mounts, REQUEST_TOKEN, (body, request) => requestEmailToken(ctx, body, request, null));
}

/** Email validation sessions: request a token by mail, submit it by POST or by following the mailed link. */
export async function emailRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx, api } = opts;
  const auth = api === 'v2' ? ('terms' as const) : undefined;

  // No body schema: requestEmailToken checks the body itself, as the fast lane that answers most of these requests
  // does; this route answers the rest (a `brand` in the query string, a form body, a chunked one).
  app.post<{ Querystring: { brand?: string } }>(REQUEST_TOKEN, { config: { auth } }, (req) =>
    requestEmailToken(
      ctx,
      req.body,
      laneRequestOf(req, ctx.config),
      typeof req.query.brand === 'string' ? req.query.brand : null,
    ),
  );

  submitTokenRoutes(app, opts, 'email', FAILURE_PAGE);
}
