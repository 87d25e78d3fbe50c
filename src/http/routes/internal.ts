import type { FastifyInstance } from 'fastify';
import type { Threepid } from '../../bindings/binder.js';
import { casefold, isValidUserId, parsePhone } from '../../matrix/index.js';
import type { AppContext } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { errors, MatrixError } from '../errors.js';
import { emailAddress } from '../validate.js';

const body = {
  type: 'object',
  required: ['medium', 'address', 'mxid'],
  properties: { medium: { type: 'string' }, address: { type: 'string' }, mxid: { type: 'string' } },
} as const;

interface InternalBody {
  medium: string;
  address: string;
  mxid: string;
}

/**
 * Sydent's internal API: binds and unbinds without validation, for deployments that prove ownership out of band.
 * Only on the internal listener; the stored rows, signatures and callbacks are those of a normal bind.
 */
export async function internalRoutes(app: FastifyInstance, opts: { ctx: AppContext }): Promise<void> {
  const { ctx } = opts;

  app.post<{ Body: InternalBody }>('/_matrix/identity/internal/bind', { schema: { body } }, async (req) => {
    const { threepid, mxid } = checked(req.body);
    return ctx.facades.sessions.bind({ threepid, mxid }, requestDeadline(req, ctx.config));
  });

  app.post<{ Body: InternalBody }>('/_matrix/identity/internal/unbind', { schema: { body } }, async (req) => {
    const { threepid, mxid } = checked(req.body);
    await ctx.facades.sessions.unbind({ threepid, mxid }, requestDeadline(req, ctx.config));
    return {};
  });
}

/**
 * The caller is trusted but not infallible: what it asks to bind is held to the client API's rules (a known medium,
 * an address valid for it, in its canonical form, a user ID by the spec's grammar) before anything is stored,
 * signed or sent to a homeserver. Every refusal is 400 M_INVALID_PARAM.
 */
function checked({ medium, address, mxid }: InternalBody): { threepid: Threepid; mxid: string } {
  if (!isValidUserId(mxid)) throw errors.invalidParam('mxid must be a Matrix user ID (@localpart:server.name)');
  return { threepid: { medium, address: canonicalAddress(medium, address) }, mxid };
}

function canonicalAddress(medium: string, address: string): string {
  switch (medium) {
    case 'email':
      try {
        return casefold(emailAddress(address));
      } catch (error) {
        throw error instanceof MatrixError ? errors.invalidParam(error.message) : error;
      }
    case 'msisdn': {
      // the MSISDN form: E.164 digits, `+` optional; formatting is read as requestToken reads a phone_number
      const phone = parsePhone(address.startsWith('+') ? address : `+${address}`, '');
      if (!phone) throw errors.invalidParam('address must be a phone number in international form (E.164 digits)');
      return phone.msisdn;
    }
    default:
      throw errors.invalidParam('medium must be "email" or "msisdn"');
  }
}
