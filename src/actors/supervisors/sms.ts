import { redactAddress } from '../../sessions/redact.js';
import { countryCodeOf } from '../../matrix/index.js';
import { createSmsProvider, type SmsMessage, type SmsProvider, type SmsReceipt } from '../../sms/index.js';
import type { Admission, Limiter } from '../../util/rate-limiter.js';
import { rateLimiter } from '../../util/shared-rate-limiter.js';
import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics/metrics.js';
import type { SystemDeps } from '../deps.js';
import type { SupervisorEnv } from '../facade.js';
import { supervisor, type RequestContext } from '../supervisor.js';
import { errorMessage } from '../../util/error-message.js';

interface SmsResource {
  provider: SmsProvider;
  /** `msisdn.ratelimit`: one bucket per destination number */
  perNumber: Limiter;
  /** `country.ratelimit`: one bucket per country calling code */
  perCountry: Limiter;
  log: Logger;
  metrics: Metrics | undefined;
}

/**
 * `send({ to, body, originator })` → the provider's receipt once it accepted the message, or an SmsSendError. At the
 * request's deadline (or when its caller gives up) the exchange with the provider is aborted.
 * `admit({ msisdn })` → takes one token of the per-number limit, then one of the per-country limit (Sydent's
 * order: a number refused by its country has used up its own token too). One pair of limiters serves v1 and v2.
 */
export const smsHandlers = {
  send: async (e: SmsMessage, r: SmsResource, request: RequestContext): Promise<SmsReceipt> => {
    const to = redactAddress(e.to);
    try {
      const receipt = await r.provider.send({ to: e.to, body: e.body, originator: e.originator }, request.signal);
      r.log.info({ to, provider: receipt.provider, id: receipt.id, requestId: receipt.requestId }, 'sms: sent');
      r.metrics?.smsSent.inc({ provider: r.provider.name });
      return receipt;
    } catch (err) {
      r.log.warn({ to, provider: r.provider.name, err: errorMessage(err) }, 'sms: not sent');
      r.metrics?.smsFailed.inc({ provider: r.provider.name });
      throw err;
    }
  },
  admit: async (e: { msisdn: string }, r: SmsResource): Promise<Admission> => {
    const number = await r.perNumber.take(e.msisdn);
    if (!number.ok) return number;
    return r.perCountry.take(countryCodeOf(e.msisdn) ?? 'unknown');
  },
};

/** Owns the SMS provider client (nothing else talks to the gateway) and the per-number and per-country limits. */
export const smsSupervisor = supervisor('sms', {
  concurrency: 8,
  open: (deps: SystemDeps, env: SupervisorEnv): SmsResource => {
    const { sms, db } = deps.config;
    const stores = () => env.facades.stores;
    return {
      provider: createSmsProvider(deps.config),
      perNumber: rateLimiter(db.engine, 'sms.msisdn', sms.msisdnRatelimit, deps.clock, stores),
      perCountry: rateLimiter(db.engine, 'sms.country', sms.countryRatelimit, deps.clock, stores),
      log: deps.log,
      metrics: deps.metrics,
    };
  },
  close: ({ provider }) => provider.close(),
  handlers: smsHandlers,
  immediate: ['admit'],
});
