import { casefold } from '../../matrix/casefold.js';
import { hostname } from 'node:os';
import { isAbsolute, resolve } from 'node:path';
import type { EmailConfig, RateLimit, SmtpTlsMode } from '../types.js';
import type { SectionValues } from '../values.js';

const TLS_MODES = new Map<string, SmtpTlsMode>([
  ['', 'plain'],
  ['0', 'plain'],
  ['plain', 'plain'],
  ['none', 'plain'],
  ['ssl', 'ssl'],
  ['tls', 'ssl'],
  ['starttls', 'starttls'],
]);

/** the addr-spec alone or inside `<…>` after a display name; no whitespace, a single `@` */
const FROM_ADDRESS = /^(?:[^<>\r\n]*<([^<>\s@]+@[^<>\s@]+)>|([^<>\s@]+@[^<>\s@]+))$/;

export function readEmail(v: SectionValues, serverName: string, templatesPath: string): EmailConfig {
  return {
    template: deprecatedTemplate(v, 'email.template', templatesPath),
    inviteTemplate: deprecatedTemplate(v, 'email.invite_template', templatesPath),
    from: readFrom(v, serverName),
    subject: v.str('email.subject'),
    inviteSubject: v.str('email.invite.subject', { raw: true }),
    inviteSubjectSpace: v.str('email.invite.subject_space', { raw: true }),
    smtpHost: v.str('email.smtphost'),
    smtpPort: v.port('email.smtpport'),
    smtpUsername: v.str('email.smtpusername'),
    smtpPassword: v.str('email.smtppassword'),
    // Sydent used socket.getfqdn(), which Node has no equivalent of
    hostname: v.str('email.hostname') || hostname(),
    tlsMode:
      TLS_MODES.get(v.str('email.tlsmode').toLowerCase()) ??
      v.fail('email.tlsmode', 'not a TLS mode: use plain (or 0, none, empty), SSL/TLS (implicit TLS) or STARTTLS'),
    defaultWebClientLocation: v.str('email.default_web_client_location'),
    usernameObfuscateCharacters: v.int('email.third_party_invite_username_obfuscate_characters', 0),
    domainObfuscateCharacters: v.int('email.third_party_invite_domain_obfuscate_characters', 0),
    homeserverBlocklist: v.lines('email.third_party_invite_homeserver_blocklist'),
    roomBlocklist: v.lines('email.third_party_invite_room_blocklist'),
    keywordBlocklist: v.lines('email.third_party_invite_keyword_blocklist').map((k) => casefold(k)),
    ratelimitSender: readRateLimit(v, 'email.ratelimit_sender'),
  };
}

export function readRateLimit(v: SectionValues, prefix: string): RateLimit {
  return { burst: v.int(`${prefix}.burst`, 1), rateHz: v.positiveNumber(`${prefix}.rate_hz`) };
}

/**
 * Empty means the default built from our name. A `{hostname}` left by a Sydent-generated file is filled in too:
 * Sydent sent it literally.
 */
function readFrom(v: SectionValues, serverName: string): string {
  const configured = v.str('email.from');
  const from =
    configured === '' ? `Sydent Validation <noreply@${serverName}>` : configured.replaceAll('{hostname}', serverName);
  if (!FROM_ADDRESS.test(from))
    v.fail('email.from', 'not an email address (a display name before <address> is allowed)');
  return from;
}

/** A `.j2` name is looked up in the templates folder (Jinja's loader root), anything else relative to the CWD. */
function deprecatedTemplate(v: SectionValues, key: string, templatesPath: string): string | null {
  const value = v.str(key);
  if (value === '') return null;
  if (value.endsWith('.j2') && !isAbsolute(value)) return resolve(templatesPath, value);
  return v.path(key);
}
