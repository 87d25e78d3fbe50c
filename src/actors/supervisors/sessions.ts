import type { AnyActorRef } from 'xstate';
import { ALPHANUMERIC, DIGITS, randomString } from '../../crypto/index.js';
import type { SessionEvent } from '../../machines/validation-session.js';
import { bindThreepid, type BinderDeps } from '../../bindings/binder.js';
import { createEmailTokenSender } from '../../sessions/email-token.js';
import { createSmsTokenSender } from '../../sessions/sms-token.js';
import { SessionHost, type RequestTokenArgs, type SessionOutcome } from '../../sessions/host.js';
import { RateLimiter } from '../../util/rate-limiter.js';
import { createReads } from '../../store/index.js';
import type { SystemDeps } from '../deps.js';
import { call, supervisor, type AnyActorSystem } from '../supervisor.js';
import { askMailer } from './mailer.js';
import { askSms } from './sms.js';
import { askStore } from './store.js';

/** Sydent purges sessions five lifetimes after their last change, every 10 minutes. */
const SWEEP_EVERY_MS = 10 * 60_000;
const PURGE_AFTER_MS = 5 * 24 * 60 * 60 * 1000;

interface SessionsResource {
  host: SessionHost;
  /** `submit_token.ratelimit`: wrong submitTokens per client address */
  submitLimiter: RateLimiter;
  binder: BinderDeps;
  timer: NodeJS.Timeout;
  first: NodeJS.Immediate;
}

export const sessionsHandlers = {
  REQUEST_TOKEN: (e: RequestTokenArgs, r: SessionsResource) => r.host.requestToken(e),
  /** an event for an existing session; answers undefined for an unknown sid */
  SESSION_EVENT: (e: { sid: number; event: SessionEvent }, r: SessionsResource) => r.host.send(e.sid, e.event),
  /**
   * submitToken: each one takes a token of the client address's bucket, and a right one gives it back, so only
   * wrong tokens (and unknown sids, wrong secrets) count against the address.
   */
  SUBMIT_TOKEN: async (e: { sid: number; event: SessionEvent; requester: string }, r: SessionsResource): Promise<SubmitResult> => {
    const admission = r.submitLimiter.take(e.requester);
    if (!admission.ok) return { limited: true, retryAfterMs: admission.retryAfterMs };
    const outcome = await r.host.send(e.sid, e.event);
    if (outcome?.rejection === null) r.submitLimiter.refund(e.requester);
    return { limited: false, outcome };
  },
  INSPECT: (e: { sid: number }, r: SessionsResource) => r.host.inspect(e.sid),
  /** binds a validated session's 3PID to `mxid`: the session moves to bound, then the binding is published */
  BIND_SESSION: async (e: { sid: number; clientSecret: string; mxid: string }, r: SessionsResource) => {
    const outcome = await r.host.send(e.sid, { type: 'BIND', mxid: e.mxid, clientSecret: e.clientSecret, now: r.binder.clock.now() });
    if (!outcome || outcome.rejection !== null || outcome.state !== 'bound') return { outcome, association: null };
    const association = await bindThreepid(r.binder, { medium: outcome.medium, address: outcome.address }, e.mxid);
    return { outcome, association };
  },
};

export const askSessions = call<typeof sessionsHandlers>();

export type SubmitResult = { limited: true; retryAfterMs: number } | { limited: false; outcome: SessionOutcome | undefined };

/** Owns the live 3PID validation session actors, restoring them from the store by sid. */
export const sessionsSupervisor = supervisor('sessions', {
  concurrency: 64,
  open: (deps: SystemDeps, system: AnyActorSystem): SessionsResource => {
    const store = (): AnyActorRef => system.get('store') as AnyActorRef;
    const host = new SessionHost({
      now: () => deps.clock.now(),
      reads: createReads(deps.db).sessions,
      store: {
        newSid: () => askStore(store(), 'SESSION_NEW_SID', {}),
        create: (medium, clientSecret, write) => askStore(store(), 'SESSION_CREATE', { medium, clientSecret, write }),
        save: (write, expectedVersion) => askStore(store(), 'SESSION_SAVE', { write, expectedVersion }),
      },
      senders: { email: createEmailTokenSender(deps, system), msisdn: createSmsTokenSender(deps, system) },
      // msisdn: the requester is the number itself (per-number, then per-country limits, sms supervisor)
      admit: (medium, key) =>
        medium === 'email'
          ? askMailer(system.get('mailer') as AnyActorRef, 'ADMIT', { key })
          : askSms(system.get('sms') as AnyActorRef, 'ADMIT', { msisdn: key }),
      inspect: deps.inspect,
      onTransition: (from, to) => deps.metrics?.transitions.inc({ machine: 'validationSession', from, to }),
      newToken: (medium) => (medium === 'email' ? randomString(32, ALPHANUMERIC) : randomString(6, DIGITS)),
    });
    const sweep = () => {
      askStore(store(), 'SESSIONS_DELETE_OLD', { cutoffMs: deps.clock.now() - PURGE_AFTER_MS }).catch((err: unknown) =>
        deps.log.warn({ err }, 'could not purge old sessions'),
      );
    };
    const timer = setInterval(sweep, SWEEP_EVERY_MS);
    timer.unref();
    const first = setImmediate(sweep);
    const { burst, rateHz } = deps.config.http.submitTokenRatelimit;
    return {
      host,
      submitLimiter: new RateLimiter(burst, rateHz, deps.clock),
      timer,
      first,
      binder: { system, identity: deps.identity, clock: deps.clock, log: deps.log },
    };
  },
  close: ({ host, timer, first }) => {
    clearImmediate(first);
    clearInterval(timer);
    host.stopAll();
  },
  handlers: sessionsHandlers,
  children: ({ host }) => host.liveStates(),
});
