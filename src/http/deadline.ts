/**
 * A request's deadline, made once at the HTTP edge and passed down with every facade call it leads to: when it
 * passes, the work the request started is aborted (a database write waiting for a lock, a mail, an SMS, a call to a
 * homeserver), not left running after the client was answered.
 */
import type { FastifyRequest } from 'fastify';
import { DeadlineExceededError } from '../actors/ask.js';
import { RequestContext } from '../actors/request-context.js';
import type { SydentConfig } from '../config/types.js';

/** The request's context (the CallOptions of every facade call it makes) and the timer that aborts it. */
export interface RequestDeadline {
  context: RequestContext;
  timer: NodeJS.Timeout;
}

/** `send`: a request that sends a mail or an SMS, which has longer. */
export type DeadlineKind = 'request' | 'send';

declare module 'fastify' {
  interface FastifyRequest {
    /** made on first use (requests that only read never need one) */
    sydentDeadline?: RequestDeadline;
  }
}

/**
 * A new deadline: `[http] request_deadline_seconds` from now, or `send_deadline_seconds` for `kind: 'send'`. It
 * makes no AbortSignal (the asks it is passed to chain onto it without one). Whoever answers the request clears its
 * timer.
 */
export function startDeadline(config: SydentConfig, kind: DeadlineKind): RequestDeadline {
  const ms = kind === 'send' ? config.http.sendDeadlineMs : config.http.requestDeadlineMs;
  const context = new RequestContext(Date.now() + ms);
  // Aborted with a DeadlineExceededError, so whichever layer sees the abort first (an ask, a write waiting for the
  // lock, a send) rejects with an error the routes answer as 503, not with AbortSignal.timeout's DOMException.
  const timer = setTimeout(
    () => context.abort(new DeadlineExceededError(`the request's deadline of ${ms} ms passed`)),
    ms,
  );
  timer.unref();
  return { context, timer };
}

/** The request's deadline (see `startDeadline`): the same context for every call of the request. */
export function requestDeadline(
  req: FastifyRequest,
  config: SydentConfig,
  kind: DeadlineKind = 'request',
): RequestContext {
  req.sydentDeadline ??= startDeadline(config, kind);
  return req.sydentDeadline.context;
}

/**
 * The request was answered: its deadline's timer goes with it, instead of holding the request's context for the rest
 * of its time (every requestToken's for 20 s) and aborting it then. The asks it made have deadlines of their own.
 */
export function releaseRequestDeadline(req: FastifyRequest): void {
  if (req.sydentDeadline) clearTimeout(req.sydentDeadline.timer);
}
