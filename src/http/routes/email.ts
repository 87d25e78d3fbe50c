import type { FastifyInstance } from 'fastify';
import { DeadlineExceededError } from '../../actors/ask.js';
import { casefold } from '../../matrix/index.js';
import { answerRepeat } from '../../sessions/repeat.js';
import type { RouteOptions } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { errors } from '../errors.js';
import { clientSecret, emailAddress, nextLink, sendAttempt } from '../validate.js';
import { submitTokenRoutes } from './submit-token.js';

const requestTokenBody = {
  type: 'object',
  required: ['client_secret', 'email', 'send_attempt'],
  properties: {
    client_secret: { type: 'string' },
    email: { type: 'string' },
    send_attempt: {},
    next_link: {},
  },
} as const;

interface RequestTokenBody {
  client_secret: string;
  email: string;
  send_attempt: unknown;
  next_link?: unknown;
}

const FAILURE_PAGE = 'Verification failed: you may need to request another verification email';

/** Email validation sessions: request a token by mail, submit it by POST or by following the mailed link. */
export async function emailRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx, api } = opts;
  const auth = api === 'v2' ? ('terms' as const) : undefined;

  app.post<{ Body: RequestTokenBody; Querystring: { brand?: string } }>(
    '/validate/email/requestToken',
    { config: { auth }, schema: { body: requestTokenBody } },
    async (req) => {
      const secret = clientSecret(req.body.client_secret);
      const attempt = sendAttempt(req.body.send_attempt);
      const email = emailAddress(req.body.email);
      const link = nextLink(req.body.next_link);
      const address = casefold(email);
      const repeat = await answerRepeat(
        ctx.reads.sessions,
        { medium: 'email', address, clientSecret: secret, sendAttempt: attempt },
        ctx.clock.now(),
      );
      if (repeat) return { sid: repeat.sid };
      const deadline = requestDeadline(req, ctx.config, 'send');
      const result = await ctx.facades.sessions
        .requestToken(
          {
            medium: 'email',
            address,
            sendTo: email,
            clientSecret: secret,
            sendAttempt: attempt,
            nextLink: link,
            brand: typeof req.query.brand === 'string' ? req.query.brand : null,
            requester: req.account?.userId ?? req.ip,
            ipAddress: req.ip,
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
    },
  );

  submitTokenRoutes(app, opts, 'email', FAILURE_PAGE);
}
