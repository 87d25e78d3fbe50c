/**
 * Sends the validation token of an msisdn session: `bodyTemplate` with the code, from the originator Sydent
 * would choose for the number, handed to the sms supervisor; resolves once the provider accepted it.
 */
import type { AnyActorRef } from 'xstate';
import { askSms } from '../actors/supervisors/sms.js';
import type { SystemDeps } from '../actors/deps.js';
import type { AnyActorSystem } from '../actors/supervisor.js';
import { chooseOriginator, countryCodeOf, renderSmsBody } from '../sms/index.js';
import type { TokenSender } from './host.js';

export function createSmsTokenSender(deps: SystemDeps, system: AnyActorSystem): TokenSender {
  return async (input, deadline) => {
    const { sms } = deps.config;
    // the session's address is the canonical MSISDN (E.164 digits), for Sydent's sessions too
    const to = input.address;
    await askSms(
      system.get('sms') as AnyActorRef,
      'SEND_SMS',
      {
        to,
        body: renderSmsBody(sms.bodyTemplate, input.token),
        originator: chooseOriginator(sms.originators, countryCodeOf(to), to),
        deadline,
      },
      // the provider call is bounded too (15 s); whichever ends first ends the wait
      Math.max(0, deadline - Date.now()),
    );
  };
}
