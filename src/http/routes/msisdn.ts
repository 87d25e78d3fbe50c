import type { FastifyInstance } from 'fastify';
import { isCountryField, MAX_PHONE_NUMBER_LENGTH, parsePhone } from '../../matrix/index.js';
import type { AppContext, RouteOptions } from '../context.js';
import { laneRequestOf, laneRoutesAt, type ApiMount, type LaneRequest, type LaneRoute } from '../fast-lane.js';
import { errors, MatrixError } from '../errors.js';
import { bodyFields, clientSecret, nextLink, sendAttempt } from '../validate.js';
import { sessionForToken, type TokenRefusals } from './request-token.js';
import { submitTokenRoutes } from './submit-token.js';

/** The fields of a requestToken body, in the order a missing one is reported; the first three are strings. */
const REQUIRED = ['client_secret', 'country', 'phone_number', 'send_attempt'] as const;
const STRINGS = ['client_secret', 'country', 'phone_number'] as const;

const SMS_REFUSALS: TokenRefusals = {
  sendFailed: () => errors.smsSendError(),
  limited: 'Too many requests for this number or country',
};

const FAILURE_PAGE = 'Verification failed: you may need to request another verification text';

const REQUEST_TOKEN = '/validate/msisdn/requestToken';

interface MsisdnAnswer {
  success: true;
  sid: string;
  msisdn: string;
  intl_fmt: string;
}

/**
 * `POST …/validate/msisdn/requestToken`, once authenticated (v2): the body checked, then the session's sid with the
 * number as parsed (request-token.ts: a repeat from the session's rows, any other from the session once the SMS is
 * sent). Shared by the fastify route and the fast lane, so both answer every body alike.
 */
async function requestMsisdnToken(
  ctx: AppContext,
  body: unknown,
  request: LaneRequest,
  brand: string | null,
): Promise<MsisdnAnswer> {
  const fields = bodyFields(body, REQUIRED, STRINGS);
  const secret = clientSecret(fields['client_secret'] as string);
  const attempt = sendAttempt(fields['send_attempt']);
  const country = fields['country'] as string;
  const number = fields['phone_number'] as string;
  if (!isCountryField(country)) {
    throw errors.invalidParam('Invalid country provided: expecting an ISO 3166-1 alpha-2 code');
  }
  if (number.length > MAX_PHONE_NUMBER_LENGTH) throw errors.invalidParam('Invalid phone_number provided');
  const link = nextLink(fields['next_link']);
  const phone = parsePhone(number, country);
  if (!phone) throw new MatrixError(400, 'M_INVALID_ADDRESS', 'Invalid phone number');
  // Before any session or rate limit: a refused country costs nothing and leaves nothing behind.
  if (ctx.config.sms.rules[phone.countryCode] === 'reject') {
    throw new MatrixError(400, 'M_DESTINATION_REJECTED', 'Phone numbers in this country are not currently supported');
  }
  const sid = await sessionForToken(
    ctx,
    request,
    {
      medium: 'msisdn',
      address: phone.msisdn,
      sendTo: phone.msisdn,
      clientSecret: secret,
      sendAttempt: attempt,
      nextLink: link,
      brand,
      // the SMS limits are per number (and per country, derived from it), whoever asks
      requester: phone.msisdn,
    },
    SMS_REFUSALS,
  );
  return { success: true, sid, msisdn: phone.msisdn, intl_fmt: phone.intlFmt };
}

/**
 * requestToken in the client listener's fast lane (http/fast-lane.ts), under each prefix the API is mounted at: a
 * request without a query string (so without `brand`).
 */
export function msisdnLaneRoutes(ctx: AppContext, mounts: readonly ApiMount[]): LaneRoute[] {
  return laneRoutesAt(mounts, REQUEST_TOKEN, (body, request) => requestMsisdnToken(ctx, body, request, null));
}

/** Phone number validation sessions: a code sent by SMS, submitted by POST or by GET (a page or a redirect). */
export async function msisdnRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx, api } = opts;
  const auth = api === 'v2' ? ('terms' as const) : undefined;

  // No body schema: requestMsisdnToken checks the body itself, as the fast lane that answers most of these requests
  // does; this route answers the rest (a `brand` in the query string, a form body, a chunked one).
  app.post<{ Querystring: { brand?: string } }>(REQUEST_TOKEN, { config: { auth } }, (req) =>
    requestMsisdnToken(
      ctx,
      req.body,
      laneRequestOf(req, ctx.config),
      typeof req.query.brand === 'string' ? req.query.brand : null,
    ),
  );

  submitTokenRoutes(app, opts, 'msisdn', FAILURE_PAGE);
}
