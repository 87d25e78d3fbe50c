/**
 * Sends the validation token of an msisdn session: `bodyTemplate` with the code, from the originator Sydent
 * would choose for the number, handed to the sms supervisor; resolves once the provider accepted it.
 */
import type { SystemDeps } from '../actors/deps.js';
import type { Facades } from '../actors/facade.js';
import { countryCodeOf } from '../matrix/index.js';
import { chooseOriginator, renderSmsBody } from '../sms/index.js';
import type { TokenSender } from './host.js';

export function createSmsTokenSender(deps: SystemDeps, sms: Facades['sms']): TokenSender {
  return async (input, request) => {
    const { sms: conf } = deps.config;
    // the session's address is the canonical MSISDN (E.164 digits), for Sydent's sessions too
    const to = input.address;
    // At the deadline the sms supervisor aborts the exchange with the provider.
    await sms.send(
      {
        to,
        body: renderSmsBody(conf.bodyTemplate, input.token),
        originator: chooseOriginator(conf.originators, countryCodeOf(to), to),
      },
      request,
    );
  };
}
