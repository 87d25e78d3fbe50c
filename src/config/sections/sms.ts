import type { Originator, OriginatorType, SmsConfig } from '../types.js';
import type { SectionValues } from '../values.js';
import { readRateLimit } from './email.js';

const ORIGINATOR_TYPES: readonly string[] = ['long', 'short', 'alpha'] satisfies OriginatorType[];

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
  };
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
