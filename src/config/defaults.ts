/**
 * Sydent's CONFIG_DEFAULTS (sydent/config/__init__.py and the section readers), with sydent-ts's deviations.
 * Keys are stored lower-cased, as ConfigParser writes them back.
 */

export type Env = Record<string, string | undefined>;

export type ConfigDefaults = Record<string, Record<string, string>>;

/** used when `ip.blacklist` is empty (Sydent's DEFAULT_IP_RANGE_BLACKLIST) */
export const DEFAULT_IP_RANGE_BLACKLIST: readonly string[] = [
  '127.0.0.0/8',
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '100.64.0.0/10',
  '192.0.0.0/24',
  '169.254.0.0/16',
  '192.88.99.0/24',
  '198.18.0.0/15',
  '192.0.2.0/24',
  '198.51.100.0/24',
  '203.0.113.0/24',
  '224.0.0.0/4',
  '::1/128',
  'fe80::/10',
  'fc00::/7',
  '2001:db8::/32',
  'ff00::/8',
  'fec0::/10',
];

/**
 * Environment variables are defaults, not overrides: they end up in a freshly generated file and otherwise only
 * apply where the file does not set the key (as in Sydent).
 */
export function configDefaults(env: Env): ConfigDefaults {
  return {
    general: {
      'server.name': env.SYDENT_SERVER_NAME ?? '',
      'log.path': '',
      'log.level': 'INFO',
      // sydent-ts: Sydent kept 365 files of its midnight rotation, always; a group that may read the log (0640)
      'log.backup_count': '365',
      'log.group': '',
      'pidfile.path': env.SYDENT_PID_FILE ?? 'sydent.pid',
      'terms.path': '',
      address_lookup_limit: '10000',
      // Sydent: `res` relative to the CWD; empty here means the templates shipped with the package
      'templates.path': '',
      'brand.default': 'matrix-org',
      enable_v1_associations: 'true',
      delete_tokens_on_bind: 'true',
      'ip.blacklist': '',
      'ip.whitelist': '',
      homeserver_allow_list: '',
      enable_v1_access: 'true',
    },
    db: {
      'db.file': env.SYDENT_DB_PATH ?? 'sydent.db',
    },
    http: {
      // Sydent: `::` and `::1`; IPv4 wildcards work on hosts with IPv6 disabled
      'clientapi.http.bind_address': '0.0.0.0',
      'clientapi.http.port': '8090',
      'internalapi.http.bind_address': '127.0.0.1',
      'internalapi.http.port': '',
      'internalapi.admin_token': '',
      'internalapi.http.allowed_hosts': '',
      'replication.https.certfile': '',
      'replication.https.cacert': '',
      'replication.https.bind_address': '::',
      'replication.https.port': '4434',
      obey_x_forwarded_for: 'False',
      trusted_proxies: '',
      // sydent-ts: wrong submitTokens per client address, 10 at once, then one a minute
      'submit_token.ratelimit.burst': '10',
      'submit_token.ratelimit.rate_hz': String(1 / 60),
      // sydent-ts: seconds between SIGTERM (when /ready starts answering 503) and closing the listeners
      drain_seconds: '0',
      // sydent-ts: then how long requests under way may take before they are answered 503 and the actors stop
      shutdown_timeout_seconds: '10',
      // sydent-ts: every request's headers within 10 s, the whole request within 30 s; idle keep-alive connections
      // are closed after 65 s (longer than the 60 s reverse proxies keep theirs, so that the proxy closes first)
      headers_timeout_seconds: '10',
      request_timeout_seconds: '30',
      keepalive_timeout_seconds: '65',
      // sydent-ts: connections the client listener holds at once, in total and per client address (0: no
      // per-address cap), and the internal listener's own budget
      'clientapi.http.max_connections': '1000',
      'clientapi.http.max_connections_per_address': '100',
      'internalapi.http.max_connections': '100',
      // sydent-ts: the time a request has before the work it started is aborted (503), and a request that sends a
      // mail or SMS (its send aborted, 500 M_EMAIL_SEND_ERROR / M_SEND_ERROR)
      request_deadline_seconds: '10',
      send_deadline_seconds: '20',
      'federation.verifycerts': 'True',
      // sydent-ts: DNS servers for federation lookups (empty: the system resolver) and extra trusted CAs
      'federation.dns_servers': '',
      'federation.cacert': '',
      client_http_base: '',
    },
    email: {
      // empty: `Sydent Validation <noreply@<server.name>>` (Sydent sent a literal `{hostname}`)
      'email.from': '',
      'email.subject': 'Your Validation Token',
      'email.invite.subject': '%(sender_display_name)s has invited you to chat',
      'email.invite.subject_space': '%(sender_display_name)s has invited you to a space',
      'email.smtphost': 'localhost',
      'email.smtpport': '25',
      'email.smtpusername': '',
      'email.smtppassword': '',
      'email.hostname': '',
      'email.tlsmode': '0',
      'email.default_web_client_location': 'https://app.element.io',
      'email.third_party_invite_username_obfuscate_characters': '3',
      'email.third_party_invite_domain_obfuscate_characters': '3',
      'email.third_party_invite_homeserver_blocklist': '',
      'email.third_party_invite_room_blocklist': '',
      'email.third_party_invite_keyword_blocklist': '',
      'email.ratelimit_sender.burst': '5',
      'email.ratelimit_sender.rate_hz': String(1 / (5 * 60)),
    },
    sms: {
      bodytemplate: 'Your code is {token}',
      username: '',
      password: '',
      'msisdn.ratelimit.burst': '5',
      'msisdn.ratelimit.rate_hz': String(1 / 3600),
      'country.ratelimit.burst': '50',
      'country.ratelimit.rate_hz': String(1 / 60),
      provider: 'openmarket',
      'openmarket.url': 'https://smsc.openmarket.com/sms/v4/mt',
      'twilio.account_sid': '',
      'twilio.auth_token': '',
      'twilio.url': 'https://api.twilio.com',
    },
    crypto: {
      'ed25519.signingkey': '',
    },
  };
}

/** All defaults in one map, which is how Sydent's DEFAULT section exposes them to every section. */
export function flattenDefaults(defaults: ConfigDefaults): Map<string, string> {
  const flat = new Map<string, string>();
  for (const options of Object.values(defaults)) {
    for (const [key, value] of Object.entries(options)) flat.set(key, value);
  }
  return flat;
}
