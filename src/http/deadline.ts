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
interface RequestDeadline {
  context: RequestContext;
  timer: NodeJS.Timeout;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** made on first use (requests that only read never need one) */
    sydentDeadline?: RequestDeadline;
  }
}

/**
 * The request's deadline: `[http] request_deadline_seconds` from now, or `send_deadline_seconds` for `kind: 'send'`
 * (a request that sends a mail or an SMS). The same context for every call of the request; it makes no AbortSignal
 * (the asks it is passed to chain onto it without one).
 */
export function requestDeadline(
  req: FastifyRequest,
  config: SydentConfig,
  kind: 'request' | 'send' = 'request',
): RequestContext {
  if (req.sydentDeadline) return req.sydentDeadline.context;
  const ms = kind === 'send' ? config.http.sendDeadlineMs : config.http.requestDeadlineMs;
  const context = new RequestContext(Date.now() + ms);
  // Aborted with a DeadlineExceededError, so whichever layer sees the abort first (an ask, a write waiting for the
  // lock, a send) rejects with an error the routes answer as 503, not with AbortSignal.timeout's DOMException.
  const timer = setTimeout(
    () => context.abort(new DeadlineExceededError(`the request's deadline of ${ms} ms passed`)),
    ms,
  );
  timer.unref();
  req.sydentDeadline = { context, timer };
  return context;
}

/**
 * The request was answered: its deadline's timer goes with it, instead of holding the request's context for the rest
 * of its time (every requestToken's for 20 s) and aborting it then. The asks it made have deadlines of their own.
 */
export function releaseRequestDeadline(req: FastifyRequest): void {
  if (req.sydentDeadline) clearTimeout(req.sydentDeadline.timer);
}
