import type { FastifyInstance, FastifyReply } from 'fastify';
import { askSessions } from '../../actors/supervisors/sessions.js';
import { renderResponsePage } from '../../mail/templates.js';
import { casefold } from '../../util/casefold.js';
import type { RouteOptions } from '../context.js';
import { errors, MatrixError } from '../errors.js';
import { clientSecret, emailAddress, nextLink, sendAttempt, sidNumber } from '../validate.js';
import { submitTokenReply } from './validation-replies.js';

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

const submitTokenBody = {
  type: 'object',
  required: ['sid', 'client_secret', 'token'],
  properties: {
    sid: { type: ['string', 'integer'] },
    client_secret: { type: 'string' },
    token: { type: 'string' },
  },
} as const;

interface RequestTokenBody {
  client_secret: string;
  email: string;
  send_attempt: unknown;
  next_link?: unknown;
}

interface SubmitTokenBody {
  sid: string | number;
  client_secret: string;
  token: string;
}

const SUCCESS_PAGE = 'Verification successful! Please return to your Matrix client to continue.';
const FAILURE_PAGE = 'Verification failed: you may need to request another verification email';

/** Email validation sessions: request a token by mail, submit it by POST or by following the mailed link. */
export async function emailRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx, api } = opts;
  const auth = api === 'v2' ? ('terms' as const) : undefined;
  const sessions = () => ctx.system.get('sessions');

  app.post<{ Body: RequestTokenBody; Querystring: { brand?: string } }>(
    '/validate/email/requestToken',
    { config: { auth }, schema: { body: requestTokenBody } },
    async (req) => {
      const secret = clientSecret(req.body.client_secret);
      const attempt = sendAttempt(req.body.send_attempt);
      const email = emailAddress(req.body.email);
      const link = nextLink(req.body.next_link);
      const result = await askSessions(sessions(), 'REQUEST_TOKEN', {
        medium: 'email',
        address: casefold(email),
        sendTo: email,
        clientSecret: secret,
        sendAttempt: attempt,
        nextLink: link,
        brand: typeof req.query.brand === 'string' ? req.query.brand : null,
        requester: req.account?.userId ?? req.ip,
        ipAddress: req.ip,
      });
      if (result.limited) throw errors.limitExceeded('Too many requests', result.retryAfterMs);
      if (result.state === 'sendFailed') throw new MatrixError(500, 'M_EMAIL_SEND_ERROR', 'Failed to send email');
      return { sid: result.sid };
    },
  );

  app.post<{ Body: SubmitTokenBody }>(
    '/validate/email/submitToken',
    { config: { auth }, schema: { body: submitTokenBody } },
    async (req) => {
      const secret = clientSecret(req.body.client_secret);
      const sid = sidNumber(req.body.sid);
      const outcome =
        sid === null
          ? undefined
          : await askSessions(sessions(), 'SESSION_EVENT', {
              sid,
              event: { type: 'SUBMIT_TOKEN', token: req.body.token, clientSecret: secret, now: ctx.clock.now() },
            });
      return submitTokenReply(outcome);
    },
  );

  // The link in the mail: opened in a browser, so no access token; the sid, secret and token are the proof.
  app.get<{ Querystring: Record<string, string | undefined> }>('/validate/email/submitToken', async (req, reply) => {
    const { sid, client_secret: secret, token, brand } = req.query;
    const page = (status: number, message: string, location?: string): FastifyReply => {
      if (location) reply.header('location', location);
      return reply
        .code(status)
        .type('text/html; charset=utf-8')
        .send(renderResponsePage(ctx.config, brand ?? null, message));
    };
    try {
      if (!sid || !secret || !token) return page(400, FAILURE_PAGE);
      const n = sidNumber(sid);
      const outcome =
        n === null
          ? undefined
          : await askSessions(sessions(), 'SESSION_EVENT', {
              sid: n,
              event: { type: 'SUBMIT_TOKEN', token, clientSecret: clientSecret(secret), now: ctx.clock.now() },
            });
      submitTokenReply(outcome);
      // Only the next_link given at requestToken (checked to be http or https then), never one from this URL.
      const next = outcome?.nextLink ?? undefined;
      return page(next ? 302 : 200, SUCCESS_PAGE, next);
    } catch (error) {
      if (error instanceof MatrixError && error.status < 500) return page(400, FAILURE_PAGE);
      throw error;
    }
  });
}
