import type { Originator, OriginatorType, SmsConfig, SmsProviderName } from '../types.js';
import type { SectionValues } from '../values.js';
import { readRateLimit } from './email.js';

const ORIGINATOR_TYPES: readonly string[] = ['long', 'short', 'alpha'] satisfies OriginatorType[];
const PROVIDERS: readonly string[] = ['openmarket', 'twilio'] satisfies SmsProviderName[];

export function readSms(v: SectionValues): SmsConfig {
  const originators: Record<string, Originator[]> = {};
  const rules: Record<string, 'allow' | 'reject'> = {};
  // options() includes inherited keys, so an originator under [DEFAULT] counts, as it did in Sydent
  for (const key of v.keys()) {
    if (key.startsWith('originators.')) {
      originators[country(v, key, 'originators.', true)] = parseOriginators(v, key);
    } else if (key.startsWith('smsrule.')) {
      const action = v.str(key);
      if (action !== 'allow' && action !== 'reject') {
        v.fail(key, `Invalid SMS rule action: ${action}, expecting 'allow' or 'reject'`);
      }
      rules[country(v, key, 'smsrule.', false)] = action;
    }
  }
  return {
    bodyTemplate: v.str('bodytemplate'),
    username: v.str('username'),
    password: v.str('password'),
    originators,
    rules,
    msisdnRatelimit: readRateLimit(v, 'msisdn.ratelimit'),
    countryRatelimit: readRateLimit(v, 'country.ratelimit'),
    ...readProvider(v),
  };
}

/** sydent-ts keys: which gateway sends the SMS, and where it is. */
function readProvider(v: SectionValues): Pick<SmsConfig, 'provider' | 'openmarketUrl' | 'twilio'> {
  const provider = v.str('provider').toLowerCase();
  if (!PROVIDERS.includes(provider)) v.fail('provider', 'not an SMS provider: use openmarket or twilio');
  const twilio = {
    accountSid: v.str('twilio.account_sid'),
    authToken: v.str('twilio.auth_token'),
    url: httpUrl(v, 'twilio.url').replace(/\/+$/, ''),
  };
  if (provider === 'twilio') {
    if (twilio.accountSid === '') v.fail('twilio.account_sid', 'required when provider = twilio');
    if (twilio.authToken === '') v.fail('twilio.auth_token', 'required when provider = twilio');
  }
  return { provider: provider as SmsProviderName, openmarketUrl: httpUrl(v, 'openmarket.url'), twilio };
}

function httpUrl(v: SectionValues, key: string): string {
  const value = v.str(key);
  let url: URL | null = null;
  try {
    url = new URL(value);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) v.fail(key, 'not an http or https URL');
  return value;
}

/** Sydent accepted any suffix, but one that is not a calling code can never match a number. */
function country(v: SectionValues, key: string, prefix: string, allowDefault: boolean): string {
  const code = key.slice(prefix.length);
  if (/^\d+$/.test(code) || (allowDefault && code === 'default')) return code;
  return v.fail(key, `"${code}" is not a numeric country calling code${allowDefault ? ' or "default"' : ''}`);
}

function parseOriginators(v: SectionValues, key: string): Originator[] {
  return v.list(key).map((item) => {
    const parts = item.split(':');
    const [type, text] = parts;
    if (parts.length !== 2 || type === undefined || text === undefined) {
      v.fail(key, 'Originators must be in form: long:<number>, short:<number> or alpha:<text>, separated by commas');
    }
    if (!ORIGINATOR_TYPES.includes(type)) {
      v.fail(key, 'Invalid originator type: valid types are long, short and alpha');
    }
    return { type: type as OriginatorType, text };
  });
}
