import type { FastifyInstance } from 'fastify';
import { DeadlineExceededError } from '../../actors/ask.js';
import { casefold } from '../../matrix/index.js';
import { answerRepeat } from '../../sessions/repeat.js';
import type { AppContext, RouteOptions } from '../context.js';
import { laneRoutesAt, type ApiMount, type LaneRequest, type LaneRoute } from '../fast-lane.js';
import { requestDeadline } from '../deadline.js';
import { errors } from '../errors.js';
import { bodyFields, clientSecret, emailAddress, nextLink, sendAttempt } from '../validate.js';
import { submitTokenRoutes } from './submit-token.js';

/** The fields of a requestToken body, in the order a missing one is reported; the first two are strings. */
const REQUIRED = ['client_secret', 'email', 'send_attempt'] as const;
const STRINGS = ['client_secret', 'email'] as const;

const FAILURE_PAGE = 'Verification failed: you may need to request another verification email';

const REQUEST_TOKEN = '/validate/email/requestToken';

/**
 * `POST …/validate/email/requestToken`, once authenticated (v2): the body checked, then the session's sid. A request
 * that repeats one its session already took is answered from the session's rows (sessions/repeat.ts); any other goes
 * to the session, which sends the mail before it answers. Shared by the fastify route and the fast lane, so both
 * answer every body alike.
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
  const repeat = await answerRepeat(
    ctx.reads.sessions,
    { medium: 'email', address, clientSecret: secret, sendAttempt: attempt },
    ctx.clock.now(),
  );
  if (repeat) return { sid: repeat.sid };
  const deadline = request.deadline('send');
  const result = await ctx.facades.sessions
    .requestToken(
      {
        medium: 'email',
        address,
        sendTo: email,
        clientSecret: secret,
        sendAttempt: attempt,
        nextLink: link,
        brand,
        requester: request.account?.userId ?? request.ip,
        ipAddress: request.ip,
        deadline: deadline.deadline,
      },
      deadline,
    )
    .catch((error: unknown) => {
      // Out of time: the send was aborted (no mail arrives later), whether or not the session said so yet.
      throw error instanceof DeadlineExceededError ? errors.emailSendError() : error;
    });
  if (result.limited) throw errors.limitExceeded('Too many requests', result.retryAfterMs);
  if (result.state === 'sendFailed') throw errors.emailSendError();
  return { sid: result.sid };
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
      {
        ip: req.ip,
        account: req.account,
        deadline: (kind) => requestDeadline(req, ctx.config, kind),
      },
      typeof req.query.brand === 'string' ? req.query.brand : null,
    ),
  );

  submitTokenRoutes(app, opts, 'email', FAILURE_PAGE);
}
