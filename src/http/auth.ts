/**
 * v2 authentication, declared per route: `config: { auth: 'token' }` needs a known access token,
 * `config: { auth: 'terms' }` also needs the current terms accepted. Checked before the body is read, so an
 * unauthenticated request gets 401 whatever it sent.
 */
import type { FastifyError, FastifyInstance, FastifyRequest, onRequestHookHandler } from 'fastify';
import { hookList } from './app.js';
import type { Account } from '../store/accounts.js';
import type { ImmediateReads } from '../store/reads.js';
import type { AppContext } from './context.js';
import { errors } from './errors.js';

export type AuthRequirement = 'token' | 'terms';

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: AuthRequirement;
  }
  interface FastifyRequest {
    /** the authenticated account, on routes that declare `auth` */
    account?: Account;
    /** the access token the account was found by */
    accessToken?: string;
  }
}

/** The token from `Authorization: Bearer` on any method, else `?access_token=` (spec v1.19 MUST; Synapse sends it). */
export function tokenFromRequest(req: FastifyRequest): string | undefined {
  const header = req.headers.authorization;
  if (header?.startsWith('Bearer ')) return bearerToken(header);
  const query = req.query as Record<string, unknown> | undefined;
  const fromQuery = query?.['access_token'];
  return typeof fromQuery === 'string' && fromQuery !== '' ? fromQuery : undefined;
}

/** The account behind an access token, if it meets `requirement`; rejects with the Matrix error to answer if not. */
export async function accountForToken(
  ctx: AppContext,
  token: string | undefined,
  requirement: AuthRequirement,
): Promise<Account> {
  if (!token) throw errors.unauthorized();
  return meetsRequirement(ctx, await ctx.reads.accounts.accountByToken(token), requirement);
}

/** As accountForToken, from reads answered on the spot (the fast lane's, store/reads.ts): throws what it rejects with. */
export function accountForTokenNow(
  ctx: AppContext,
  reads: ImmediateReads,
  token: string | undefined,
  requirement: AuthRequirement,
): Account {
  if (!token) throw errors.unauthorized();
  return meetsRequirement(ctx, reads.accountByToken(token), requirement);
}

/** The account found by a token, if it meets `requirement`; throws the Matrix error to answer if not. */
function meetsRequirement(ctx: AppContext, account: Account | undefined, requirement: AuthRequirement): Account {
  if (!account) throw errors.unauthorized();
  if (requirement === 'terms') {
    const terms = ctx.terms.current();
    if (terms && account.consentVersion !== terms.masterVersion) throw errors.termsNotSigned();
  }
  return account;
}

/** The token from an `Authorization` header value, if it is a Bearer one. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header?.startsWith('Bearer ')) return undefined;
  return header.slice('Bearer '.length).trim() || undefined;
}

/** The account behind a request's token, and whether it accepted the current terms. */
async function authenticate(ctx: AppContext, req: FastifyRequest, requirement: AuthRequirement): Promise<Account> {
  const token = tokenFromRequest(req);
  const account = await accountForToken(ctx, token, requirement);
  req.account = account;
  req.accessToken = token;
  return account;
}

/**
 * Gives every route that declares `auth` its own onRequest hook, first among its route-level hooks (after the
 * app-wide ones, CORS), so routes without it pay nothing and no route reads its config per request. What
 * `authenticate` rejects with is the request's error.
 */
export function installAuth(app: FastifyInstance, ctx: AppContext): void {
  app.decorateRequest('account', undefined);
  app.decorateRequest('accessToken', undefined);
  app.addHook('onRoute', (route) => {
    const requirement = route.config?.auth;
    if (!requirement) return;
    const hook: onRequestHookHandler = (req, _reply, done) => {
      authenticate(ctx, req, requirement).then(
        () => done(),
        (error: unknown) => done(error as FastifyError),
      );
    };
    // A new array, never a push: fastify copies a GET route's options for its HEAD route, which gets its own hook.
    route.onRequest = [hook, ...hookList(route.onRequest)];
  });
}

/** The authenticated account of a route that declared `auth`. */
export function accountOf(req: FastifyRequest): Account {
  if (!req.account) throw errors.unauthorized();
  return req.account;
}
