/**
 * Which sections and keys a file may hold. A typo must not go unnoticed where it matters: an unknown section, or
 * an unknown key within a few letters of a known one, stops start-up with a suggestion. Other unknown keys are
 * only warned about, as Sydent (which ignores them) let old files carry them.
 */
import { distance } from 'fastest-levenshtein';
import { configDefaults } from './defaults.js';
import { ConfigError } from './errors.js';
import { DEFAULT_SECTION, type IniDocument } from './ini.js';

export const PEER_SECTION_PREFIX = 'peer.';

/** keys Sydent reads only when present, so they have no default */
const OPTIONAL_KEYS: Record<string, readonly string[]> = {
  general: ['prometheus_port', 'prometheus_addr', 'sentry_dsn', 'node_name', 'callback_claim_seconds'],
  http: ['verify_response_template'],
  // sydent-ts: left out of generated files, which stay SQLite's (and never carry a password)
  db: ['db.engine', 'db.url', 'db.pool_size'],
  email: ['email.template', 'email.invite_template'],
};

const KEY_PATTERNS: Record<string, readonly RegExp[]> = {
  sms: [/^originators\./, /^smsrule\./],
};

const PEER_KEYS: readonly string[] = ['base_replication_url', 'push_batch_size'];

const DEFAULTS = configDefaults({});

function isKnownInSection(section: string, key: string): boolean {
  if (section.startsWith(PEER_SECTION_PREFIX)) return PEER_KEYS.includes(key);
  return (
    Object.hasOwn(DEFAULTS[section] ?? {}, key) ||
    (OPTIONAL_KEYS[section]?.includes(key) ?? false) ||
    (KEY_PATTERNS[section]?.some((p) => p.test(key)) ?? false)
  );
}

function isKnownSection(section: string): boolean {
  return section === DEFAULT_SECTION || section.startsWith(PEER_SECTION_PREFIX) || Object.hasOwn(DEFAULTS, section);
}

/** A key under [DEFAULT] is fine if some section reads it. */
function isKnownKey(section: string, key: string): boolean {
  if (section !== DEFAULT_SECTION) return isKnownInSection(section, key);
  return [...Object.keys(DEFAULTS), PEER_SECTION_PREFIX].some((s) => isKnownInSection(s, key));
}

/** The keys a section reads by name (the pattern keys of [sms] have no name to suggest). */
function namedKeys(section: string): string[] {
  if (section.startsWith(PEER_SECTION_PREFIX)) return [...PEER_KEYS];
  return [...Object.keys(DEFAULTS[section] ?? {}), ...(OPTIONAL_KEYS[section] ?? [])];
}

/**
 * The known name a typo most likely meant: one or two letters off (one for names under five letters), case aside
 * (section names are case-sensitive, and `[HTTP]` is not `[http]`).
 */
function closestName(typed: string, known: readonly string[]): string | undefined {
  const allowed = typed.length < 5 ? 1 : 2;
  let best: { name: string; d: number } | undefined;
  for (const name of known) {
    const d = distance(typed.toLowerCase(), name);
    if (d <= allowed && (!best || d < best.d)) best = { name, d };
  }
  return best?.name;
}

const SECTION_LIST = `${Object.keys(DEFAULTS)
  .map((s) => `[${s}]`)
  .join(', ')} and [${PEER_SECTION_PREFIX}NAME]`;

/**
 * Throws a ConfigError for an unknown section or a key that looks like a typo of a known one; returns warnings
 * for the other unknown keys. Keys inherited from [DEFAULT] are never reported where they are inherited.
 */
export function checkKnownKeys(doc: IniDocument, path: string): string[] {
  const warnings: string[] = [];
  const sections = doc.defaults ? [doc.defaults, ...doc.sections.values()] : [...doc.sections.values()];
  for (const section of sections) {
    const name = section.name;
    if (!isKnownSection(name)) {
      const meant = closestName(name, Object.keys(DEFAULTS));
      const hint = meant ? `did you mean [${meant}]?` : `the sections are ${SECTION_LIST}`;
      throw new ConfigError(`config error: ${path}: unknown section [${name}]: ${hint}`, name);
    }
    for (const key of section.options.keys()) {
      if (isKnownKey(name, key)) continue;
      const candidates = name === DEFAULT_SECTION ? Object.keys(DEFAULTS).flatMap(namedKeys) : namedKeys(name);
      const meant = closestName(key, candidates);
      if (meant)
        throw new ConfigError(`config error: [${name}] ${key}: unknown key, did you mean ${meant}?`, name, key);
      const home = Object.keys(DEFAULTS).find((s) => s !== name && isKnownInSection(s, key));
      warnings.push(`config: unknown key [${name}] ${key}${home ? ` (it belongs in [${home}])` : ''}`);
    }
  }
  return warnings;
}
