import type { FastifyInstance } from 'fastify';
import { DeadlineExceededError } from '../../actors/ask.js';
import { isCountryField, MAX_PHONE_NUMBER_LENGTH, parsePhone } from '../../matrix/index.js';
import { answerRepeat } from '../../sessions/repeat.js';
import type { RouteOptions } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { errors, MatrixError } from '../errors.js';
import { clientSecret, nextLink, sendAttempt } from '../validate.js';
import { submitTokenRoutes } from './submit-token.js';

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

interface RequestTokenBody {
  client_secret: string;
  country: string;
  phone_number: string;
  send_attempt: unknown;
  next_link?: unknown;
}

const FAILURE_PAGE = 'Verification failed: you may need to request another verification text';

/** Phone number validation sessions: a code sent by SMS, submitted by POST or by GET (a page or a redirect). */
export async function msisdnRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx, api } = opts;
  const auth = api === 'v2' ? ('terms' as const) : undefined;

  app.post<{ Body: RequestTokenBody; Querystring: { brand?: string } }>(
    '/validate/msisdn/requestToken',
    { config: { auth }, schema: { body: requestTokenBody } },
    async (req) => {
      const secret = clientSecret(req.body.client_secret);
      const attempt = sendAttempt(req.body.send_attempt);
      if (!isCountryField(req.body.country)) {
        throw errors.invalidParam('Invalid country provided: expecting an ISO 3166-1 alpha-2 code');
      }
      if (req.body.phone_number.length > MAX_PHONE_NUMBER_LENGTH)
        throw errors.invalidParam('Invalid phone_number provided');
      const link = nextLink(req.body.next_link);
      const phone = parsePhone(req.body.phone_number, req.body.country);
      if (!phone) throw new MatrixError(400, 'M_INVALID_ADDRESS', 'Invalid phone number');
      // Before any session or rate limit: a refused country costs nothing and leaves nothing behind.
      if (ctx.config.sms.rules[phone.countryCode] === 'reject') {
        throw new MatrixError(
          400,
          'M_DESTINATION_REJECTED',
          'Phone numbers in this country are not currently supported',
        );
      }
      const repeat = await answerRepeat(
        ctx.reads.sessions,
        { medium: 'msisdn', address: phone.msisdn, clientSecret: secret, sendAttempt: attempt },
        ctx.clock.now(),
      );
      if (repeat) return { success: true, sid: repeat.sid, msisdn: phone.msisdn, intl_fmt: phone.intlFmt };
      const deadline = requestDeadline(req, ctx.config, 'send');
      const result = await ctx.facades.sessions
        .requestToken(
          {
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
            deadline: deadline.deadline,
          },
          deadline,
        )
        .catch((error: unknown) => {
          // Out of time: the send was aborted (no SMS goes out later), whether or not the session said so yet.
          throw error instanceof DeadlineExceededError ? errors.smsSendError() : error;
        });
      if (result.limited)
        throw errors.limitExceeded('Too many requests for this number or country', result.retryAfterMs);
      if (result.state === 'sendFailed') throw errors.smsSendError();
      return { success: true, sid: result.sid, msisdn: phone.msisdn, intl_fmt: phone.intlFmt };
    },
  );

  submitTokenRoutes(app, opts, 'msisdn', FAILURE_PAGE);
}
