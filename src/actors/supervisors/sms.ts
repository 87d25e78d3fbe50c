import { redactAddress } from '../../sessions/redact.js';
import { countryCodeOf, createSmsProvider, type SmsMessage, type SmsProvider, type SmsProviderOptions, type SmsReceipt } from '../../sms/index.js';
import { RateLimiter, type Admission } from '../../util/rate-limiter.js';
import type { Logger } from '../../log.js';
import type { Metrics } from '../../metrics/metrics.js';
import type { SystemDeps } from '../deps.js';
import { call, supervisor } from '../supervisor.js';

interface SmsResource {
  provider: SmsProvider;
  /** `msisdn.ratelimit`: one bucket per destination number */
  perNumber: RateLimiter;
  /** `country.ratelimit`: one bucket per country calling code */
  perCountry: RateLimiter;
  log: Logger;
  metrics: Metrics | undefined;
}

/**
 * `SEND_SMS { to, body, originator, deadline? }` → the provider's receipt once it accepted the message, or an
 * SmsSendError; nothing is sent once `deadline` (Date.now() time) has passed.
 * `ADMIT { msisdn }` → takes one token of the per-number limit, then one of the per-country limit (Sydent's
 * order: a number refused by its country has used up its own token too). One pair of limiters serves v1 and v2.
 */
export const smsHandlers = {
  SEND_SMS: async (e: SmsMessage & { deadline?: number }, r: SmsResource): Promise<SmsReceipt> => {
    const to = redactAddress(e.to);
    // one that waited in the queue past its caller's deadline is not sent at all
    if (e.deadline !== undefined && Date.now() >= e.deadline) throw new Error('no time was left to send the SMS');
    try {
      const receipt = await r.provider.send({ to: e.to, body: e.body, originator: e.originator });
      r.log.info({ to, provider: receipt.provider, id: receipt.id, requestId: receipt.requestId }, 'sms: sent');
      r.metrics?.smsSent.inc({ provider: r.provider.name });
      return receipt;
    } catch (err) {
      r.log.warn({ to, provider: r.provider.name, err: err instanceof Error ? err.message : String(err) }, 'sms: not sent');
      r.metrics?.smsFailed.inc({ provider: r.provider.name });
      throw err;
    }
  },
  ADMIT: (e: { msisdn: string }, r: SmsResource): Admission => {
    const number = r.perNumber.take(e.msisdn);
    if (!number.ok) return number;
    return r.perCountry.take(countryCodeOf(e.msisdn) ?? 'unknown');
  },
};

export const askSms = call<typeof smsHandlers>();

export interface SmsOptions {
  provider?: SmsProviderOptions;
}

/** Owns the SMS provider client (nothing else talks to the gateway) and the per-number and per-country limits. */
export function createSmsSupervisor(options: SmsOptions = {}) {
  return supervisor('sms', {
    concurrency: 8,
    open: (deps: SystemDeps): SmsResource => {
      const { sms } = deps.config;
      return {
        provider: createSmsProvider(deps.config, options.provider),
        perNumber: new RateLimiter(sms.msisdnRatelimit.burst, sms.msisdnRatelimit.rateHz, deps.clock),
        perCountry: new RateLimiter(sms.countryRatelimit.burst, sms.countryRatelimit.rateHz, deps.clock),
        log: deps.log,
        metrics: deps.metrics,
      };
    },
    close: ({ provider }) => provider.close(),
    handlers: smsHandlers,
    immediate: ['ADMIT'],
  });
}

export const smsSupervisor = createSmsSupervisor();
