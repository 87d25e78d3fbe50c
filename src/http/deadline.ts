/**
 * A request's deadline, made once at the HTTP edge and passed down with every facade call it leads to: when it
 * passes, the work the request started is aborted (a database write waiting for a lock, a mail, an SMS, a call to a
 * homeserver), not left running after the client was answered.
 */
import type { FastifyRequest } from 'fastify';
import { DeadlineExceededError, type CallOptions } from '../actors/ask.js';
import type { SydentConfig } from '../config/types.js';

/** What every facade call of a request carries: when it must be answered, and the signal that aborts its work. */
interface RequestDeadline extends CallOptions {
  deadline: number;
  signal: AbortSignal;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** made on first use (requests that only read never need one) */
    sydentDeadline?: RequestDeadline;
  }
}

/**
 * The request's deadline: `[http] request_deadline_seconds` from now, or `send_deadline_seconds` for `kind: 'send'`
 * (a request that sends a mail or an SMS). The same object for every call of the request.
 */
export function requestDeadline(
  req: FastifyRequest,
  config: SydentConfig,
  kind: 'request' | 'send' = 'request',
): RequestDeadline {
  if (req.sydentDeadline) return req.sydentDeadline;
  const ms = kind === 'send' ? config.http.sendDeadlineMs : config.http.requestDeadlineMs;
  // Aborted with a DeadlineExceededError, so whichever layer sees the abort first (an ask, a write waiting for the
  // lock, a send) rejects with an error the routes answer as 503, not with AbortSignal.timeout's DOMException.
  const controller = new AbortController();
  const timer = setTimeout(
    () => controller.abort(new DeadlineExceededError(`the request's deadline of ${ms} ms passed`)),
    ms,
  );
  timer.unref();
  const deadline: TimedDeadline = { deadline: Date.now() + ms, signal: controller.signal, timer };
  req.sydentDeadline = deadline;
  return deadline;
}

interface TimedDeadline extends RequestDeadline {
  timer: NodeJS.Timeout;
}

/**
 * The request was answered: its deadline's timer goes with it, instead of holding the request's signal for the rest
 * of its time (every requestToken's for 20 s) and aborting it then. The asks it made have deadlines of their own.
 */
export function releaseRequestDeadline(req: FastifyRequest): void {
  const held = req.sydentDeadline as TimedDeadline | undefined;
  if (held) clearTimeout(held.timer);
}
