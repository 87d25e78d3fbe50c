import type { FastifyInstance } from 'fastify';
import { allUrls, documentUrls, policiesOf } from '../../terms/terms.js';
import { accountOf } from '../auth.js';
import type { RouteOptions } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { errors } from '../errors.js';

const acceptBody = {
  type: 'object',
  required: ['user_accepts'],
  properties: { user_accepts: { type: 'array', items: { type: 'string' } } },
} as const;

/** Terms of service: the documents (no auth), and the user's acceptance (token, never terms-gated). */
export async function termsRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx } = opts;

  app.get('/terms', async () => ({ policies: policiesOf(ctx.terms.current()) }));

  app.post<{ Body: { user_accepts: string[] } }>(
    '/terms',
    { config: { auth: 'token' }, schema: { body: acceptBody } },
    async (req) => {
      const terms = ctx.terms.current();
      const known = allUrls(terms);
      const unknown = [...new Set(req.body.user_accepts)].filter((url) => !known.has(url));
      if (unknown.length > 0) throw errors.invalidParam(`Unrecognised URLs: ${unknown.join(', ')}`);
      await ctx.facades.stores.acceptTerms(
        {
          userId: accountOf(req).userId,
          urls: req.body.user_accepts,
          masterVersion: terms?.masterVersion ?? null,
          documents: documentUrls(terms),
        },
        requestDeadline(req, ctx.config),
      );
      return {};
    },
  );
}
