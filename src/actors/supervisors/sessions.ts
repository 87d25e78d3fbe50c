import { createHash } from 'node:crypto';
import { ALPHANUMERIC, DIGITS, randomString } from '../../crypto/index.js';
import type { HomeserverRequest } from '../../federation/index.js';
import type { SessionEvent } from '../../machines/validation-session.js';
import {
  bindThreepid,
  unbindThreepid,
  type BinderDeps,
  type SignedAssociation,
  type Threepid,
} from '../../bindings/binder.js';
import { storeInvite, type InviteDeps, type InviteOutcome, type InviteRequest } from '../../invites/store-invite.js';
import { createEmailTokenSender } from '../../sessions/email-token.js';
import { createSmsTokenSender } from '../../sessions/sms-token.js';
import { isValidated, SessionHost, type RequestTokenArgs, type SessionOutcome } from '../../sessions/host.js';
import { SessionSweeper } from '../../sessions/sweep.js';
import type { Limiter } from '../../util/rate-limiter.js';
import { rateLimiter } from '../../util/shared-rate-limiter.js';
import type { SystemDeps } from '../deps.js';
import type { SupervisorEnv } from '../facade.js';
import { supervisor, type RequestContext } from '../supervisor.js';

const hashed = (key: string): string => createHash('sha256').update(key).digest('base64url');

/** Sydent purges sessions five lifetimes after their last change, every 10 minutes. */
const SWEEP_EVERY_MS = 10 * 60_000;
const PURGE_AFTER_MS = 5 * 24 * 60 * 60 * 1000;
/** Unlike Sydent's, our first sweep waits for start-up to finish, and goes a slice of rows at a time. */
const FIRST_SWEEP_AFTER_MS = 2000;
const SWEEP_SLICE = 100;

interface SessionsResource {
  host: SessionHost;
  /** `submit_token.ratelimit`: wrong submitTokens per client address */
  submitLimiter: Limiter;
  /**
   * `email.ratelimit_sender`: mails per sender (mxid on v2, IP on v1), shared by requestToken and store-invite. Both
   * flows run here, so the limit is this supervisor's and a send's admission is no ask to another.
   */
  senderLimiter: Limiter;
  log: SystemDeps['log'];
  /** the bind flow's parts: our signing key is this supervisor's */
  binder: BinderDeps;
  invites: InviteDeps;
  sweeper: SessionSweeper;
}

/** The proof an unbind comes with (the spec's two). */
export type UnbindProof =
  | { kind: 'session'; sid: number; clientSecret: string }
  /** a request the homeserver of the mxid signed (X-Matrix) */
  | { kind: 'homeserver'; request: HomeserverRequest };

export type UnbindOutcome =
  | { ok: true }
  /** the session does not prove anything (unknown, wrong secret, not validated, expired) */
  | { ok: false; session: SessionOutcome | undefined }
  /** a validated session, but for another 3PID */
  | { ok: false; mismatch: true }
  /** a signed request, but from another homeserver than the mxid's */
  | { ok: false; wrongOrigin: true };

export type SubmitResult =
  { limited: true; retryAfterMs: number } | { limited: false; outcome: SessionOutcome | undefined };

/**
 * The 3PID flows, by facade method (`facades.sessions.requestToken(...)`): validation sessions (one machine each),
 * and what a validated 3PID leads to: binding and unbinding it, and the invites waiting for it.
 */
export const sessionsHandlers = {
  requestToken: (e: RequestTokenArgs, r: SessionsResource, q: RequestContext) => r.host.requestToken(e, q),
  /** an event for an existing session; answers undefined for an unknown sid */
  event: (e: { sid: number; event: SessionEvent }, r: SessionsResource, q: RequestContext) =>
    r.host.send(e.sid, e.event, q),
  /**
   * submitToken: each one takes a token of the client address's bucket, and a right one gives it back, so only
   * wrong tokens (and unknown sids, wrong secrets) count against the address.
   */
  submitToken: async (
    e: { sid: number; event: SessionEvent; requester: string },
    r: SessionsResource,
    q: RequestContext,
  ): Promise<SubmitResult> => {
    const admission = await r.submitLimiter.take(e.requester);
    if (!admission.ok) return { limited: true, retryAfterMs: admission.retryAfterMs };
    const outcome = await r.host.send(e.sid, e.event, q);
    if (outcome?.rejection === null) {
      // The session is validated either way: a refund that cannot be recorded only costs the address a token.
      await Promise.resolve(r.submitLimiter.refund(e.requester)).catch((err: unknown) =>
        r.log.warn({ err }, 'could not refund a submitToken rate token'),
      );
    }
    return { limited: false, outcome };
  },
  inspect: (e: { sid: number }, r: SessionsResource) => r.host.inspect(e.sid),
  /**
   * 3pid/bind: a validated session's 3PID bound to `mxid`. The session's move to bound and the binding are one
   * write: a binding that cannot be stored leaves the session validated.
   */
  bindSession: async (
    e: { sid: number; clientSecret: string; mxid: string },
    r: SessionsResource,
    q: RequestContext,
  ): Promise<{ outcome: SessionOutcome | undefined; association: SignedAssociation | null }> => {
    let association = null as SignedAssociation | null;
    const outcome = await r.host.bind(
      e.sid,
      { type: 'BIND', mxid: e.mxid, clientSecret: e.clientSecret, now: r.binder.clock.now() },
      async (threepid, session) => {
        let rowVersion: number | null = null;
        association = await bindThreepid(
          r.binder,
          threepid,
          e.mxid,
          q,
          session
            ? async (bind) => {
                rowVersion = await r.binder.facades.stores.bindSession({ session, bind }, q);
              }
            : undefined,
        );
        return rowVersion;
      },
      q,
    );
    return { outcome, association };
  },
  /** the internal API's bind: no session, the caller vouches for the 3PID */
  bind: (e: { threepid: Threepid; mxid: string }, r: SessionsResource, q: RequestContext): Promise<SignedAssociation> =>
    bindThreepid(r.binder, e.threepid, e.mxid, q),
  /** the internal API's unbind; `false` when it was not bound here */
  unbind: (e: { threepid: Threepid; mxid: string }, r: SessionsResource, q: RequestContext) =>
    unbindThreepid(r.binder, e.threepid, e.mxid, q),
  /** 3pid/unbind: the proof checked, then the binding withdrawn */
  unbindWithProof: async (
    e: { threepid: Threepid; mxid: string; proof: UnbindProof },
    r: SessionsResource,
    q: RequestContext,
  ): Promise<UnbindOutcome> => {
    if (e.proof.kind === 'session') {
      const session = await r.host.send(
        e.proof.sid,
        { type: 'CHECK_VALIDATED', clientSecret: e.proof.clientSecret, now: r.binder.clock.now() },
        q,
      );
      if (!session || !isValidated(session)) return { ok: false, session };
      if (session.medium !== e.threepid.medium || session.address !== e.threepid.address)
        return { ok: false, mismatch: true };
    } else {
      const { origin } = await r.binder.facades.notifier.verifyRequest(e.proof.request, q);
      if (!e.mxid.endsWith(`:${origin}`)) return { ok: false, wrongOrigin: true };
    }
    await unbindThreepid(r.binder, e.threepid, e.mxid, q);
    return { ok: true };
  },
  /** store-invite, once the request is checked: rate limit, not bound yet, stored, mailed */
  storeInvite: (e: InviteRequest, r: SessionsResource, q: RequestContext): Promise<InviteOutcome> =>
    storeInvite(r.invites, e, q),
};

/** Owns the live 3PID validation session actors (restored from the store by sid) and the flows that follow them. */
export const sessionsSupervisor = supervisor('sessions', {
  concurrency: 64,
  open: (deps: SystemDeps, env: SupervisorEnv): SessionsResource => {
    const { facades } = env;
    const senderLimiter = rateLimiter(
      deps.config.db.engine,
      'email.sender',
      deps.config.email.ratelimitSender,
      deps.clock,
      () => facades.stores,
    );
    const host = new SessionHost({
      now: () => deps.clock.now(),
      reads: facades.reads.sessions,
      store: {
        create: (medium, clientSecret, write, request) =>
          facades.stores.createSession({ medium, clientSecret, write }, request),
        save: (write, expectedVersion, request) => facades.stores.saveSession({ write, expectedVersion }, request),
      },
      senders: { email: createEmailTokenSender(deps, facades.mailer), msisdn: createSmsTokenSender(deps, facades.sms) },
      // msisdn: the requester is the number itself (per-number, then per-country limits, sms supervisor)
      admit: async (medium, key, request) =>
        medium === 'email' ? senderLimiter.take(key) : facades.sms.admit({ msisdn: key }, request),
      inspect: deps.inspect,
      onTransition: (from, to) => deps.metrics?.transitions.inc({ machine: 'validationSession', from, to }),
      newToken: (medium) => (medium === 'email' ? randomString(32, ALPHANUMERIC) : randomString(6, DIGITS)),
      ...(deps.config.db.engine === 'postgresql'
        ? {
            // The key holds a client secret: only its hash leaves this supervisor.
            turns: {
              hold: (key: string, deadline: number) => facades.stores.holdKey({ key: hashed(key) }, { deadline }),
              release: (key: string) => facades.stores.releaseKey({ key: hashed(key) }),
            },
          }
        : {}),
    });
    const sweeper = new SessionSweeper({
      store: {
        deleteExpired: (cutoffMs, limit) => facades.stores.deleteOldSessions({ cutoffMs, limit }),
      },
      now: () => deps.clock.now(),
      purgeAfterMs: PURGE_AFTER_MS,
      everyMs: SWEEP_EVERY_MS,
      firstAfterMs: FIRST_SWEEP_AFTER_MS,
      slice: SWEEP_SLICE,
      onError: (err) => deps.log.warn({ err }, 'could not purge old sessions'),
    });
    sweeper.start();
    return {
      host,
      submitLimiter: rateLimiter(
        deps.config.db.engine,
        'http.submit_token',
        deps.config.http.submitTokenRatelimit,
        deps.clock,
        () => facades.stores,
      ),
      senderLimiter,
      log: deps.log,
      sweeper,
      binder: { facades, identity: deps.identity, clock: deps.clock, log: deps.log },
      invites: {
        config: deps.config,
        facades,
        identity: deps.identity,
        clock: deps.clock,
        admitSender: (key) => senderLimiter.take(key),
      },
    };
  },
  close: ({ host, sweeper }) => {
    sweeper.stop();
    host.stopAll();
  },
  handlers: sessionsHandlers,
  children: ({ host }) => host.liveStates(),
  childCounts: ({ host }) => host.liveCounts(),
});
