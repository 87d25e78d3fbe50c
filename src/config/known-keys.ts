/** Which keys a section may hold, so that typos are reported instead of silently ignored. */
import { DEFAULT_SECTION, type IniDocument } from './ini.js';
import { configDefaults } from './defaults.js';

export const PEER_SECTION_PREFIX = 'peer.';

/** keys Sydent reads only when present, so they have no default */
const OPTIONAL_KEYS: Record<string, readonly string[]> = {
  general: ['prometheus_port', 'prometheus_addr', 'sentry_dsn'],
  http: ['verify_response_template'],
  email: ['email.template', 'email.invite_template'],
};

const KEY_PATTERNS: Record<string, readonly RegExp[]> = {
  sms: [/^originators\./, /^smsrule\./],
};

const PEER_KEYS: readonly string[] = ['base_replication_url'];

const DEFAULTS = configDefaults({});

function isKnownInSection(section: string, key: string): boolean {
  if (section.startsWith(PEER_SECTION_PREFIX)) return PEER_KEYS.includes(key);
  return (
    Object.hasOwn(DEFAULTS[section] ?? {}, key) ||
    (OPTIONAL_KEYS[section]?.includes(key) ?? false) ||
    (KEY_PATTERNS[section]?.some((p) => p.test(key)) ?? false)
  );
}

export function isKnownSection(section: string): boolean {
  return section === DEFAULT_SECTION || section.startsWith(PEER_SECTION_PREFIX) || Object.hasOwn(DEFAULTS, section);
}

/** A key under [DEFAULT] is fine if some section reads it. */
export function isKnownKey(section: string, key: string): boolean {
  if (section !== DEFAULT_SECTION) return isKnownInSection(section, key);
  return [...Object.keys(DEFAULTS), PEER_SECTION_PREFIX].some((s) => isKnownInSection(s, key));
}

/** Warnings for keys written in the file that nothing reads; inherited keys are never reported. */
export function unknownKeyWarnings(doc: IniDocument): string[] {
  const warnings: string[] = [];
  const sections = doc.defaults ? [doc.defaults, ...doc.sections.values()] : [...doc.sections.values()];
  for (const section of sections) {
    if (!isKnownSection(section.name)) {
      warnings.push(`config: unknown section [${section.name}]`);
      continue;
    }
    for (const key of section.options.keys()) {
      if (!isKnownKey(section.name, key)) warnings.push(`config: unknown key [${section.name}] ${key}`);
    }
  }
  return warnings;
}
