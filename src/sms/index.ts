/**
 * SMS: the text and sender of a validation SMS, and the providers that deliver it.
 */
import type { SydentConfig } from '../config/types.js';
import { IpGuard } from '../federation/ip-guard.js';
import { ProviderHttp, PROVIDER_TIMEOUT_MS } from './http.js';
import { OpenMarketProvider } from './openmarket.js';
import type { SmsProvider } from './provider.js';
import { TwilioProvider } from './twilio.js';

export { chooseOriginator, DEFAULT_ORIGINATOR, renderSmsBody, TON } from './originator.js';
export { SmsSendError, type SmsMessage, type SmsProvider, type SmsReceipt } from './provider.js';
export { OpenMarketProvider } from './openmarket.js';
export { TwilioProvider } from './twilio.js';

/**
 * The configured provider, its requests confined by `[general] ip.blacklist` / `ip.whitelist` and bounded by
 * PROVIDER_TIMEOUT_MS (connecting, the answer's headers, the whole exchange).
 */
export function createSmsProvider(config: SydentConfig): SmsProvider {
  const http = new ProviderHttp(
    new IpGuard({ blacklist: config.general.ipBlacklist, whitelist: config.general.ipWhitelist }),
    PROVIDER_TIMEOUT_MS,
  );
  const { sms } = config;
  switch (sms.provider) {
    case 'twilio':
      return new TwilioProvider(http, sms.twilio);
    case 'openmarket':
      return new OpenMarketProvider(http, { url: sms.openmarketUrl, username: sms.username, password: sms.password });
  }
}
