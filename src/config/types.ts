/**
 * The typed configuration: `sydent.conf` parsed once at start-up. Every Sydent section and key is here
 * (names in camelCase); later code never reads the INI text again.
 */

export interface RateLimit {
  burst: number;
  rateHz: number;
}

export type OriginatorType = 'long' | 'short' | 'alpha';
export interface Originator {
  type: OriginatorType;
  text: string;
}

export interface SigningKey {
  alg: 'ed25519';
  /** the key version: signatures use the key id `ed25519:<version>` */
  version: string;
  /** the 32-byte ed25519 seed */
  seed: Uint8Array;
}

export interface GeneralConfig {
  /** `server.name`: our name in signatures; the host name when unset */
  serverName: string;
  /** absolute; "" = stderr */
  logPath: string;
  /** CRITICAL, ERROR, WARNING, INFO, DEBUG or NOTSET */
  logLevel: string;
  /** rotated log files kept (the log rotates at midnight, as Sydent's); 0 keeps them all */
  logBackupCount: number;
  /** the group (name or id) that may read the log file: the file is then 0640 and of that group; "" = 0600 */
  logGroup: string;
  /** absolute; "" disables the pid file */
  pidfilePath: string;
  /** absolute; "" means no terms */
  termsPath: string;
  addressLookupLimit: number;
  /** absolute; the templates shipped in <package>/config/templates unless configured */
  templatesPath: string;
  /** sub-directories of `templatesPath` found at start-up */
  validBrands: string[];
  brandDefault: string;
  prometheusPort: number | null;
  prometheusAddr: string | null;
  sentryDsn: string | null;
  enableV1Associations: boolean;
  deleteTokensOnBind: boolean;
  /** `addr/prefix` ranges refused for outbound requests (Sydent's default list when unset) */
  ipBlacklist: string[];
  ipWhitelist: string[];
  homeserverAllowList: string[];
  enableV1Access: boolean;
  /** `node_name`: this process among the nodes sharing one database (debug endpoints, /ready); `host:pid` when unset */
  nodeName: string;
  /** `callback_claim_seconds`: how long a node's claim on a homeserver callback lasts before another may take it */
  callbackClaimMs: number;
}

export interface ListenerAddress {
  bindAddress: string;
  port: number;
}

export interface RequestTimeouts {
  /** `headers_timeout_seconds`: the request line and headers, from the request's first byte */
  headersMs: number;
  /** `request_timeout_seconds`: the whole request, body included */
  requestMs: number;
  /** `keepalive_timeout_seconds`: how long an idle keep-alive connection is kept */
  keepAliveMs: number;
}

export interface ConnectionCaps {
  /** `clientapi.http.max_connections` */
  client: number;
  /** `clientapi.http.max_connections_per_address`; 0: none */
  clientPerAddress: number;
  /** `internalapi.http.max_connections` */
  internal: number;
}

export interface HttpConfig {
  clientApi: ListenerAddress;
  /** null: the internal listener is off */
  internalApi: ListenerAddress | null;
  /** bearer token required on the internal listener's debug endpoints; "" = none */
  internalAdminToken: string;
  /** `internalapi.http.allowed_hosts`: host names (lower case) the internal listener answers to besides its address */
  internalAllowedHosts: string[];
  /** `submit_token.ratelimit.*`: wrong submitTokens per client address (a right one costs nothing) */
  submitTokenRatelimit: RateLimit;
  replication: {
    certfile: string;
    cacert: string;
    bindAddress: string;
    port: number;
  };
  obeyXForwardedFor: boolean;
  /** addresses of reverse proxies whose X-Forwarded-For is believed */
  trustedProxies: string[];
  /** after SIGTERM, how long /ready answers 503 while the listeners still serve, before they close */
  drainSeconds: number;
  /** `shutdown_timeout_seconds`: once the listeners close, how long requests under way may take before they are answered 503 and the actors are stopped */
  shutdownTimeoutMs: number;
  /** how long a request may take to arrive, on every listener */
  requestTimeouts: RequestTimeouts;
  /** how many connections the listeners hold at once */
  connectionCaps: ConnectionCaps;
  /** `request_deadline_seconds`: the time a request has, from the moment it is read, before the work it started is aborted */
  requestDeadlineMs: number;
  /** `send_deadline_seconds`: the same for a request that sends a mail or an SMS (requestToken, store-invite) */
  sendDeadlineMs: number;
  federationVerifyCerts: boolean;
  /** `federation.dns_servers`: `ip`, `ip:port` or `[ipv6]:port` for federation lookups; empty = the system resolver */
  federationDnsServers: string[];
  /** `federation.cacert`: absolute path of a PEM file of extra CAs trusted for homeservers; "" = none */
  federationCaCert: string;
  /** absolute public base URL (no trailing slash) */
  clientHttpBase: string;
  /** true when client_http_base was not configured and was derived from the listener */
  clientHttpBaseDerived: boolean;
  verifyResponseTemplate: string | null;
}

export type SmtpTlsMode = 'plain' | 'ssl' | 'starttls';

export interface EmailConfig {
  /** deprecated explicit templates, absolute: a `.j2` name was relative to templatesPath, others to the CWD */
  template: string | null;
  inviteTemplate: string | null;
  from: string;
  subject: string;
  inviteSubject: string;
  inviteSubjectSpace: string;
  smtpHost: string;
  smtpPort: number;
  smtpUsername: string;
  smtpPassword: string;
  /** HELO name and Message-ID domain */
  hostname: string;
  tlsMode: SmtpTlsMode;
  defaultWebClientLocation: string;
  usernameObfuscateCharacters: number;
  domainObfuscateCharacters: number;
  homeserverBlocklist: string[];
  roomBlocklist: string[];
  /** casefolded keywords */
  keywordBlocklist: string[];
  ratelimitSender: RateLimit;
}

export interface SmsConfig {
  bodyTemplate: string;
  username: string;
  password: string;
  /** keyed by numeric country code or "default" */
  originators: Record<string, Originator[]>;
  /** keyed by numeric country code */
  rules: Record<string, 'allow' | 'reject'>;
  msisdnRatelimit: RateLimit;
  countryRatelimit: RateLimit;
  /** sydent-ts: `provider`, the SMS gateway that sends the codes (Sydent only knew OpenMarket) */
  provider: SmsProviderName;
  /** sydent-ts: `openmarket.url`, OpenMarket's MT endpoint (overridable for tests and regional endpoints) */
  openmarketUrl: string;
  /** sydent-ts: `twilio.*`, used when `provider = twilio` */
  twilio: TwilioConfig;
}

export type SmsProviderName = 'openmarket' | 'twilio';

export interface TwilioConfig {
  accountSid: string;
  authToken: string;
  /** the API base, without the `/2010-04-01/...` path */
  url: string;
}

export interface PeerConfig {
  /** `base_replication_url`; absent: `https://NAME:<port>` as Sydent */
  baseReplicationUrl?: string;
  /** `push_batch_size`: associations per push to this peer (absent: Sydent's 100) */
  pushBatchSize?: number;
}

export type DbEngineName = 'sqlite' | 'postgresql';

/** `[db]`: the engine and where its database is. */
export interface DbConfig {
  engine: DbEngineName;
  /** the SQLite file (`db.file`); also read by the tools that work on a sydent.db */
  dbFile: string;
  /** `db.url`, else SYDENT_DB_URL (libpq's PG* variables fill in what it leaves out); null for SQLite */
  url: string | null;
  /** `db.pool_size`: PostgreSQL connections per node */
  poolSize: number;
}

export interface SydentConfig {
  /** absolute path of the file this was read from */
  configPath: string;
  general: GeneralConfig;
  db: DbConfig;
  http: HttpConfig;
  email: EmailConfig;
  sms: SmsConfig;
  crypto: { signingKey: SigningKey };
  /** `[peer.NAME]` sections */
  peers: Record<string, PeerConfig>;
}
