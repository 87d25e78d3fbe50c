import type { FastifyInstance } from 'fastify';
import { Base64Error, decodeBase64, encodeBase64Url } from '../../crypto/index.js';
import { errors } from '../errors.js';
import type { RouteOptions } from '../context.js';
import { requestDeadline } from '../deadline.js';

const isValidQuery = {
  type: 'object',
  required: ['public_key'],
  properties: { public_key: { type: 'string' } },
} as const;

/** The long-term public key and its validity check (unauthenticated: homeservers call these). */
export async function pubkeyRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { identity } = opts.ctx;
  // Sydent serves `ed25519:0` whatever version its key has; the real key id answers too.
  const keyIds = new Set(['ed25519:0', identity.keyId]);

  app.get<{ Params: { keyId: string } }>('/pubkey/:keyId', async (req) => {
    if (!keyIds.has(req.params.keyId)) throw errors.notFound('The public key was not found');
    return { public_key: identity.publicKeyBase64 };
  });

  // Ephemeral invite keys, in either base64 alphabet: stored URL-safe, as Sydent stores them.
  app.get<{ Querystring: { public_key: string } }>(
    '/pubkey/ephemeral/isvalid',
    { schema: { querystring: isValidQuery } },
    async (req) => {
      let canonical: string;
      try {
        canonical = encodeBase64Url(decodeBase64(req.query.public_key));
      } catch (e) {
        if (e instanceof Base64Error) return { valid: false };
        throw e;
      }
      const { ctx } = opts;
      return {
        valid: await ctx.facades.stores.checkEphemeralKey({ publicKey: canonical }, requestDeadline(req, ctx.config)),
      };
    },
  );

  app.get<{ Querystring: { public_key: string } }>(
    '/pubkey/isvalid',
    { schema: { querystring: isValidQuery } },
    async (req) => ({ valid: sameKey(req.query.public_key, identity.publicKey) }),
  );
}

/** Compares decoded bytes, so the standard and URL-safe spellings of our key are both valid. */
function sameKey(encoded: string, key: Uint8Array): boolean {
  try {
    return Buffer.from(decodeBase64(encoded)).equals(Buffer.from(key));
  } catch (e) {
    if (e instanceof Base64Error) return false;
    throw e;
  }
}
