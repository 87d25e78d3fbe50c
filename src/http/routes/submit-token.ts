import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { renderResponsePage } from '../../mail/templates.js';
import { redirectAfterValidation } from '../../sessions/next-link.js';
import type { RouteOptions } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { MatrixError } from '../errors.js';
import { clientSecret, storedNextLink } from '../validate.js';
import { submitTokenEvent, submitTokenReply, tokenIncorrect } from './validation-replies.js';

/** The spec's bound on a validation token, in code points. */
const MAX_TOKEN_LENGTH = 255;

const submitTokenBody = {
  type: 'object',
  required: ['sid', 'client_secret', 'token'],
  properties: {
    sid: { type: ['string', 'integer'] },
    client_secret: { type: 'string' },
    token: { type: 'string' },
  },
} as const;

interface SubmitTokenBody {
  sid: string | number;
  client_secret: string;
  token: string;
}

const SUCCESS_PAGE = 'Verification successful! Please return to your Matrix client to continue.';

/**
 * submitToken for one medium, by POST (v2: token and terms) and by GET (the link in the mail or SMS, opened in a
 * browser: no access token, the sid, secret and token are the proof).
 */
export function submitTokenRoutes(
  app: FastifyInstance,
  opts: RouteOptions,
  medium: 'email' | 'msisdn',
  failurePage: string,
): void {
  const { ctx, api } = opts;
  const path = `/validate/${medium}/submitToken`;
  // The client's address as trusted_proxies / X-Forwarded-For make it: the key of the wrong-token limit.
  const submit = (req: FastifyRequest, sid: string | number, secret: string, token: string) => {
    // No token of ours is empty or longer than the spec's 255 code points: such a one is wrong without asking.
    if (token.length === 0 || (token.length > MAX_TOKEN_LENGTH && [...token].length > MAX_TOKEN_LENGTH))
      throw tokenIncorrect();
    return submitTokenEvent(
      ctx,
      sid,
      req.ip,
      { type: 'SUBMIT_TOKEN', token, clientSecret: clientSecret(secret), now: ctx.clock.now() },
      requestDeadline(req, ctx.config),
    );
  };

  app.post<{ Body: SubmitTokenBody }>(
    path,
    { config: { auth: api === 'v2' ? 'terms' : undefined }, schema: { body: submitTokenBody } },
    async (req) => {
      const secret = clientSecret(req.body.client_secret);
      return submitTokenReply(await submit(req, req.body.sid, secret, req.body.token));
    },
  );

  app.get<{ Querystring: Record<string, string | undefined> }>(path, async (req, reply) => {
    const { sid, client_secret: secret, token, brand } = req.query;
    const page = (status: number, message: string, location?: string): FastifyReply => {
      if (location) reply.header('location', location);
      return reply
        .code(status)
        .type('text/html; charset=utf-8')
        .send(renderResponsePage(ctx.config, brand ?? null, message));
    };
    try {
      if (!sid || !secret || !token) return page(400, failurePage);
      const outcome = await submit(req, sid, secret, token);
      submitTokenReply(outcome);
      // Links are read by next_link's rule again: one stored before it is normalised, one that fails it is dropped.
      const clicked = req.query['nextLink'];
      const next = outcome
        ? redirectAfterValidation(
            { ...outcome, nextLink: storedNextLink(outcome.nextLink) },
            storedNextLink(typeof clicked === 'string' ? clicked : null),
          )
        : null;
      return page(next ? 302 : 200, SUCCESS_PAGE, next ?? undefined);
    } catch (error) {
      if (error instanceof MatrixError && error.status === 429) {
        reply.headers(error.headers);
        return page(429, failurePage);
      }
      if (error instanceof MatrixError && error.status < 500) return page(400, failurePage);
      throw error;
    }
  });
}
