/**
 * Sydent's database schema.
 *
 * Two shapes matter:
 *  - the v0 schema, i.e. what Sydent's `sydent/db/*.sql` files create. Sydent replays them (all
 *    `IF NOT EXISTS`) whenever `user_version` is 0, then upgrades from there, so an old database at
 *    version 0 can only be brought forward by doing the same;
 *  - the final schema at `user_version` 5, which is where every Sydent database ends up.
 *
 * The final statements are written so that the text SQLite keeps in `sqlite_master` is byte for byte
 * what Sydent's own migration path leaves there (SQLite drops `IF NOT EXISTS`, and `ALTER TABLE ADD
 * COLUMN` splices the new column into the stored CREATE text). A database we create is then
 * indistinguishable from one Sydent created, which keeps `sqlite3 .schema` diffs, Sydent itself and any
 * operator tooling happy. Do not reformat these strings.
 */

/** The `user_version` Sydent's last schema upgrade sets; ours start above it. */
export const SYDENT_SCHEMA_VERSION = 5;

/** Every table Sydent's final schema has, besides SQLite's own `sqlite_sequence`. */
export const SYDENT_TABLES = [
  'threepid_validation_sessions',
  'threepid_token_auths',
  'local_threepid_associations',
  'global_threepid_associations',
  'hashing_metadata',
  'invite_tokens',
  'ephemeral_public_keys',
  'peers',
  'peer_pubkeys',
  'accounts',
  'tokens',
  'accepted_terms_urls',
] as const;

/**
 * Tables that exist from v0 onwards. Finding any of them in a database whose `user_version` is 0 means
 * Sydent (or an old Sydent) has been there, so the database must be upgraded, not created.
 */
export const SYDENT_V0_TABLES = [
  'threepid_validation_sessions',
  'threepid_token_auths',
  'local_threepid_associations',
  'global_threepid_associations',
  'invite_tokens',
  'ephemeral_public_keys',
  'peers',
  'peer_pubkeys',
] as const;

/** Named indexes of the final schema (the automatic ones of `accounts` and `tokens` come with their tables). */
export const SYDENT_INDEXES = [
  'threepid_validation_sessions_mtime',
  'local_threepid_medium_address',
  'global_threepid_medium_address',
  'global_threepid_medium_lower_address',
  'global_threepid_originServer_originId',
  'global_threepid_lookup_hash',
  'invite_token_medium_address',
  'invite_token_token',
  'ephemeral_public_keys_index',
  'name',
  'peername_alg',
  'accepted_terms_urls_idx',
] as const;

/**
 * Two tables Sydent's `.sql` files declare the same way in v0 and in v5, kept to the letter (comments included): the
 * text is what `sqlite_master` shows.
 */
const INVITE_TOKENS_TABLE = `invite_tokens (
    id integer primary key,
    medium varchar(16) not null,
    address varchar(256) not null,
    room_id varchar(256) not null,
    sender varchar(256) not null,
    token varchar(256) not null,
    received_ts bigint, -- When the invite was received by us from the homeserver
    sent_ts bigint -- When the token was sent by us to the user
)`;
const EPHEMERAL_PUBLIC_KEYS_TABLE = `ephemeral_public_keys(
    id integer primary key,
    public_key varchar(256) not null,
    verify_count bigint default 0,
    persistence_ts bigint
)`;

/**
 * The v0 schema as Sydent's `.sql` files have it. Two quirks are kept on purpose because the v0→v1
 * upgrade was written against them: `medium_address` is declared for both association tables, so the
 * second declaration is a no-op; and `threepid_token_auths` references `threepid_validations`, a table
 * that never existed (hence foreign keys stay off).
 */
export const SYDENT_V0_SCHEMA: readonly string[] = [
  `CREATE TABLE IF NOT EXISTS ${INVITE_TOKENS_TABLE}`,
  `CREATE INDEX IF NOT EXISTS invite_token_medium_address on invite_tokens(medium, address)`,
  `CREATE INDEX IF NOT EXISTS invite_token_token on invite_tokens(token)`,
  `CREATE TABLE IF NOT EXISTS ${EPHEMERAL_PUBLIC_KEYS_TABLE}`,
  `CREATE UNIQUE INDEX IF NOT EXISTS ephemeral_public_keys_index on ephemeral_public_keys(public_key)`,
  `CREATE TABLE IF NOT EXISTS peers (id integer primary key, name varchar(255) not null, port integer default null, lastSentVersion integer, lastPokeSucceededAt integer, active integer not null default 0)`,
  `CREATE UNIQUE INDEX IF NOT EXISTS name on peers(name)`,
  `CREATE TABLE IF NOT EXISTS peer_pubkeys (id integer primary key, peername varchar(255) not null, alg varchar(16) not null, key text not null, foreign key (peername) references peers (name))`,
  `CREATE UNIQUE INDEX IF NOT EXISTS peername_alg on peer_pubkeys(peername, alg)`,
  `CREATE TABLE IF NOT EXISTS local_threepid_associations (id integer primary key, medium varchar(16) not null, address varchar(256) not null, mxid varchar(256) not null, ts integer not null, notBefore bigint not null, notAfter bigint not null)`,
  `CREATE UNIQUE INDEX IF NOT EXISTS medium_address on local_threepid_associations(medium, address)`,
  `CREATE TABLE IF NOT EXISTS global_threepid_associations (id integer primary key, medium varchar(16) not null, address varchar(256) not null, mxid varchar(256) not null, ts integer not null, notBefore bigint not null, notAfter integer not null, originServer varchar(255) not null, originId integer not null, sgAssoc text not null)`,
  `CREATE INDEX IF NOT EXISTS medium_address on global_threepid_associations (medium, address)`,
  `CREATE INDEX IF NOT EXISTS medium_lower_address on global_threepid_associations (medium, lower(address))`,
  `CREATE UNIQUE INDEX IF NOT EXISTS originServer_originId on global_threepid_associations (originServer, originId)`,
  `CREATE TABLE IF NOT EXISTS threepid_validation_sessions (id integer primary key, medium varchar(16) not null, address varchar(256) not null, clientSecret varchar(32) not null, validated int default 0, mtime bigint not null)`,
  `CREATE TABLE IF NOT EXISTS threepid_token_auths (id integer primary key, validationSession integer not null, token varchar(32) not null, sendAttemptNumber integer not null, foreign key (validationSession) references threepid_validations(id))`,
];

/**
 * The final schema (user_version 5). Column notes, for the modules that read these tables:
 *  - threepid_validation_sessions.id is not a rowid SQLite picks: Sydent's are random in 0..2^31, ours the hour
 *    times 2^31 plus 31 random bits (sessions.ts `newSid`); mtime is ms.
 *  - threepid_token_auths.sendAttemptNumber starts at -1.
 *  - local_threepid_associations: AUTOINCREMENT so ids (the replication cursor) are never reused;
 *    mxid NULL marks an unbind tombstone; times in ms.
 *  - global_threepid_associations.lookup_hash is computed with *our* pepper, whatever the origin.
 *  - hashing_metadata holds one row, id 0.
 *  - invite_tokens.received_ts / sent_ts and ephemeral_public_keys.persistence_ts are seconds.
 *  - peers.lastSentVersion is the last local association id pushed; lastPokeSucceededAt is ms.
 *  - accounts.created_ts is ms.
 * `sqlite_sequence` appears by itself with the first AUTOINCREMENT table.
 */
export const SYDENT_SCHEMA: readonly string[] = [
  `CREATE TABLE threepid_validation_sessions (id integer primary key, medium varchar(16) not null, address varchar(256) not null, clientSecret varchar(32) not null, validated int default 0, mtime bigint not null)`,
  `CREATE INDEX threepid_validation_sessions_mtime ON threepid_validation_sessions(mtime)`,
  `CREATE TABLE threepid_token_auths (id integer primary key, validationSession integer not null, token varchar(32) not null, sendAttemptNumber integer not null, foreign key (validationSession) references threepid_validations(id))`,

  `CREATE TABLE local_threepid_associations (id integer primary key autoincrement, medium varchar(16) not null, address varchar(256) not null, mxid varchar(256), ts integer, notBefore bigint, notAfter bigint, lookup_hash VARCHAR(256))`,
  `CREATE UNIQUE INDEX local_threepid_medium_address on local_threepid_associations(medium, address)`,
  `CREATE TABLE global_threepid_associations (id integer primary key autoincrement, medium varchar(16) not null, address varchar(256) not null, mxid varchar(256) not null, ts integer not null, notBefore bigint not null, notAfter integer not null, originServer varchar(255) not null, originId integer not null, sgAssoc text not null, lookup_hash VARCHAR(256))`,
  `CREATE INDEX global_threepid_medium_address on global_threepid_associations (medium, address)`,
  `CREATE INDEX global_threepid_medium_lower_address on global_threepid_associations (medium, lower(address))`,
  `CREATE UNIQUE INDEX global_threepid_originServer_originId on global_threepid_associations (originServer, originId)`,
  `CREATE INDEX global_threepid_lookup_hash ON global_threepid_associations(lookup_hash)`,
  `CREATE TABLE hashing_metadata (id integer primary key, lookup_pepper varchar(256))`,

  `CREATE TABLE ${INVITE_TOKENS_TABLE}`,
  `CREATE INDEX invite_token_medium_address on invite_tokens(medium, address)`,
  `CREATE INDEX invite_token_token on invite_tokens(token)`,
  `CREATE TABLE ${EPHEMERAL_PUBLIC_KEYS_TABLE}`,
  `CREATE UNIQUE INDEX ephemeral_public_keys_index on ephemeral_public_keys(public_key)`,

  `CREATE TABLE peers (id integer primary key, name varchar(255) not null, port integer default null, lastSentVersion integer, lastPokeSucceededAt integer, active integer not null default 0)`,
  `CREATE UNIQUE INDEX name on peers(name)`,
  `CREATE TABLE peer_pubkeys (id integer primary key, peername varchar(255) not null, alg varchar(16) not null, key text not null, foreign key (peername) references peers (name))`,
  `CREATE UNIQUE INDEX peername_alg on peer_pubkeys(peername, alg)`,

  `CREATE TABLE accounts(user_id TEXT NOT NULL PRIMARY KEY, created_ts BIGINT NOT NULL, consent_version TEXT)`,
  `CREATE TABLE tokens(token TEXT NOT NULL PRIMARY KEY, user_id TEXT NOT NULL)`,
  `CREATE TABLE accepted_terms_urls(user_id TEXT NOT NULL, url TEXT NOT NULL)`,
  `CREATE UNIQUE INDEX accepted_terms_urls_idx ON accepted_terms_urls (user_id, url)`,
];
