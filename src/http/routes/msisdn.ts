import type { FastifyInstance, FastifyReply } from 'fastify';
import { askSessions } from '../../actors/supervisors/sessions.js';
import { renderResponsePage } from '../../mail/templates.js';
import { isCountryField, MAX_PHONE_NUMBER_LENGTH, parsePhone } from '../../sms/index.js';
import type { RouteOptions } from '../context.js';
import { errors, MatrixError } from '../errors.js';
import { clientSecret, nextLink, sendAttempt, sidNumber } from '../validate.js';
import { submitTokenReply } from './validation-replies.js';

const requestTokenBody = {
  type: 'object',
  required: ['client_secret', 'country', 'phone_number', 'send_attempt'],
  properties: {
    client_secret: { type: 'string' },
    country: { type: 'string' },
    phone_number: { type: 'string' },
    send_attempt: {},
    next_link: {},
  },
} as const;

const submitTokenBody = {
  type: 'object',
  required: ['sid', 'client_secret', 'token'],
  properties: {
    sid: { anyOf: [{ type: 'string' }, { type: 'integer' }] },
    client_secret: { type: 'string' },
    token: { type: 'string' },
  },
} as const;

interface RequestTokenBody {
  client_secret: string;
  country: string;
  phone_number: string;
  send_attempt: unknown;
  next_link?: unknown;
}

interface SubmitTokenBody {
  sid: string | number;
  client_secret: string;
  token: string;
}

const SUCCESS_PAGE = 'Verification successful! Please return to your Matrix client to continue.';
const FAILURE_PAGE = 'Verification failed: you may need to request another verification text';

/** Phone number validation sessions: a code sent by SMS, submitted by POST or by GET (a page or a redirect). */
export async function msisdnRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx, api } = opts;
  const auth = api === 'v2' ? ('terms' as const) : undefined;
  const sessions = () => ctx.system.get('sessions');

  app.post<{ Body: RequestTokenBody; Querystring: { brand?: string } }>(
    '/validate/msisdn/requestToken',
    { config: { auth }, schema: { body: requestTokenBody } },
    async (req) => {
      const secret = clientSecret(req.body.client_secret);
      const attempt = sendAttempt(req.body.send_attempt);
      if (!isCountryField(req.body.country)) {
        throw errors.invalidParam('Invalid country provided: expecting an ISO 3166-1 alpha-2 code');
      }
      if (req.body.phone_number.length > MAX_PHONE_NUMBER_LENGTH) throw errors.invalidParam('Invalid phone_number provided');
      const link = nextLink(req.body.next_link);
      const phone = parsePhone(req.body.phone_number, req.body.country);
      if (!phone) throw new MatrixError(400, 'M_INVALID_ADDRESS', 'Invalid phone number');
      // Before any session or rate limit: a refused country costs nothing and leaves nothing behind.
      if (ctx.config.sms.rules[phone.countryCode] === 'reject') {
        throw new MatrixError(400, 'M_DESTINATION_REJECTED', 'Phone numbers in this country are not currently supported');
      }
      const result = await askSessions(sessions(), 'REQUEST_TOKEN', {
        medium: 'msisdn',
        address: phone.msisdn,
        sendTo: phone.msisdn,
        clientSecret: secret,
        sendAttempt: attempt,
        nextLink: link,
        brand: typeof req.query.brand === 'string' ? req.query.brand : null,
        // the SMS limits are per number (and per country, derived from it), whoever asks
        requester: phone.msisdn,
        ipAddress: req.ip,
      });
      if (result.limited) throw errors.limitExceeded('Too many requests for this number or country', result.retryAfterMs);
      if (result.state === 'sendFailed') throw new MatrixError(500, 'M_SEND_ERROR', 'Failed to send SMS');
      return { success: true, sid: result.sid, msisdn: phone.msisdn, intl_fmt: phone.intlFmt };
    },
  );

  app.post<{ Body: SubmitTokenBody }>(
    '/validate/msisdn/submitToken',
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

  // Opened in a browser (Sydent's was broken: always a 500); no access token, the sid, secret and token are the proof.
  app.get<{ Querystring: Record<string, string | undefined> }>('/validate/msisdn/submitToken', async (req, reply) => {
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
