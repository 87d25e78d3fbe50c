import type { FastifyInstance } from 'fastify';
import { Base64Error, decodeBase64, signJson } from '../../crypto/index.js';
import { InviteMailError } from '../../invites/store-invite.js';
import {
  casefold,
  isAcceptableRoomId,
  isValidUserId,
  MAX_ROOM_ID_LENGTH,
  MAX_USER_ID_LENGTH,
  serverNameOfUserId,
} from '../../matrix/index.js';
import type { AppContext, RouteOptions } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { errors, MatrixError } from '../errors.js';
import { emailAddress } from '../validate.js';

const storeInviteBody = {
  type: 'object',
  required: ['medium', 'address', 'room_id', 'sender'],
  properties: {
    medium: { type: 'string' },
    address: { type: 'string' },
    room_id: { type: 'string' },
    sender: { type: 'string' },
  },
} as const;

const signBody = {
  type: 'object',
  properties: { mxid: { type: 'string' }, token: { type: 'string' }, private_key: { type: 'string' } },
} as const;

/** Longest accepted value of any invite field: room names and avatars are display data, not documents. */
const MAX_FIELD_LENGTH = 2048;

const forbidden = () => errors.unauthorizedStatus(403, 'Invite not allowed');

/** Third-party invites: storing one (and mailing it), and blind-signing for the invitee's client. */
export async function inviteRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx, api } = opts;
  const auth = api === 'v2' ? ('terms' as const) : undefined;

  app.post<{
    Body: Record<string, unknown> & { medium: string; address: string; room_id: string; sender: string };
    Querystring: { brand?: unknown };
  }>('/store-invite', { config: { auth }, schema: { body: storeInviteBody } }, async (req) => {
    const { medium, address, room_id: roomId, sender } = req.body;
    if (api === 'v2' && req.account?.userId !== sender) throw errors.unauthorizedStatus(403, "'sender' doesn't match");
    if (medium !== 'email') throw new MatrixError(400, 'M_UNRECOGNIZED', `Didn't understand medium '${medium}'`);
    emailAddress(address);
    checkFields(req.body);
    // Any room ID a homeserver sends, as Sydent took it: newer room versions have no `:server` part.
    if (!isAcceptableRoomId(roomId)) {
      throw errors.invalidParam(`room_id must be 1 to ${MAX_ROOM_ID_LENGTH} characters without control characters`);
    }
    const senderServer = serverNameOfUserId(sender);
    if (!senderServer || sender.length > MAX_USER_ID_LENGTH)
      throw errors.invalidParam('sender must be a Matrix user ID');
    checkBlocklists(ctx, req.body, roomId, senderServer);

    let outcome;
    try {
      outcome = await ctx.facades.sessions.storeInvite(
        {
          args: req.body,
          address: casefold(address),
          sendTo: address,
          roomId,
          sender,
          verifiedSender: api === 'v2',
          // as on every endpoint, the brand is the query's `?brand=`, never a field of the invite
          brand: typeof req.query.brand === 'string' ? req.query.brand : null,
        },
        requestDeadline(req, ctx.config, 'send'),
      );
    } catch (error) {
      if (error instanceof InviteMailError) throw errors.emailSendError('Failed to send the invite email');
      throw error;
    }
    if (outcome.ok) return outcome.invite;
    if ('boundTo' in outcome)
      throw new MatrixError(400, 'M_THREEPID_IN_USE', 'Binding already known', { mxid: outcome.boundTo });
    throw errors.limitExceeded('Limit exceeded for this sender', outcome.retryAfterMs);
  });

  // Element sends these in the query string with an empty body, so the query is read too.
  app.post<{
    Body: { mxid?: string; token?: string; private_key?: string } | undefined;
    Querystring: Record<string, string>;
  }>('/sign-ed25519', { config: { auth }, schema: { body: { anyOf: [signBody, { type: 'null' }] } } }, async (req) => {
    const field = (name: 'mxid' | 'token' | 'private_key') => req.body?.[name] ?? req.query[name];
    const missing = (['mxid', 'token', 'private_key'] as const).filter((n) => field(n) === undefined);
    if (missing.length) throw errors.missingParams([...missing]);
    const [mxid, token, privateKey] = [field('mxid')!, field('token')!, field('private_key')!];
    if (!isValidUserId(mxid)) throw errors.invalidParam('mxid must be a Matrix user ID (@localpart:server.name)');
    const sender = await ctx.reads.invites.senderOfToken(token);
    if (!sender) throw new MatrixError(404, 'M_UNRECOGNIZED', "Didn't recognize token");
    let seed: Uint8Array;
    try {
      seed = decodeBase64(privateKey);
    } catch (error) {
      if (error instanceof Base64Error) throw errors.invalidParam('private_key is not base64');
      throw error;
    }
    if (seed.length !== 32) throw errors.invalidParam('private_key must be a 32-byte ed25519 seed');
    return signJson({ mxid, sender, token }, ctx.identity.serverName, { version: '0', seed });
  });
}

/** Every field a template may show: strings of a sane length. */
function checkFields(body: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(body)) {
    if (typeof value !== 'string') continue;
    if (value.length > MAX_FIELD_LENGTH) throw errors.invalidParam(`${key} is too long`);
  }
}

/** Sydent's homeserver, room and keyword blocklists. */
function checkBlocklists(ctx: AppContext, body: Record<string, unknown>, roomId: string, senderServer: string): void {
  const { email } = ctx.config;
  if (email.roomBlocklist.includes(roomId) || email.homeserverBlocklist.includes(senderServer)) throw forbidden();
  if (email.keywordBlocklist.length === 0) return;
  for (const [key, value] of Object.entries(body)) {
    if (typeof value !== 'string') continue;
    // The web client's address is exempt from its scheme: "https" must not match a keyword like "http".
    const text = casefold(key === 'org.matrix.web_client_location' ? value.replace(/^https?:\/\//, '') : value);
    if (email.keywordBlocklist.some((keyword) => text.includes(keyword))) throw forbidden();
  }
}
