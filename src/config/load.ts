/**
 * Reads `sydent.conf` once at start-up into a typed SydentConfig, writing a complete file on first run and a
 * signing key when the file has none, as Sydent did.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { configDefaults, flattenDefaults, type ConfigDefaults, type Env } from './defaults.js';
import { ConfigError } from './errors.js';
import { setOptionInText } from './ini-edit.js';
import { formatIni, IniReader, IniSyntaxError, parseIni, type IniDocument } from './ini.js';
import { checkKnownKeys } from './known-keys.js';
import type { BuildContext } from './sections/context.js';
import { readEmail } from './sections/email.js';
import { readGeneral } from './sections/general.js';
import { readHttp } from './sections/http.js';
import { readPeers } from './sections/peers.js';
import { readSms } from './sections/sms.js';
import { formatSigningKey, generateSigningKey, parseSigningKey } from './signing-key.js';
import type { DbConfig, DbEngineName, SigningKey, SydentConfig } from './types.js';
import { SectionValues } from './values.js';
import { readableByOthersWarning } from '../util/private-file.js';
import { checkPgUrl, redactPgUrl } from '../store/pg/url.js';

export interface LoadConfigOptions {
  /** wins over SYDENT_CONF */
  configPath?: string;
  /** SYDENT_CONF, SYDENT_SERVER_NAME, SYDENT_PID_FILE, SYDENT_DB_PATH and SYDENT_DB_URL are read from here */
  env: Env;
  /** relative paths, in the options and inside the file, resolve against this */
  cwd: string;
  /** receives warnings and notes about files written */
  log?: (line: string) => void;
  /**
   * What a missing file means: Sydent's first run writes it with every default and a new signing key (the
   * default), but a path given on the command line that is not there is a typo, and an error.
   */
  ifMissing?: 'generate' | 'error';
}

export interface LoadedConfig {
  config: SydentConfig;
  /** absolute path of the file read (and perhaps written) */
  path: string;
  /** true when the file did not exist and was written with every default */
  generated: boolean;
  warnings: string[];
}

const SIGNING_KEY_SECTION = 'crypto';
const SIGNING_KEY_OPTION = 'ed25519.signingkey';

const GENERATED_HEADER = [
  'sydent-ts configuration, written on first start with every default.',
  'config/sydent.conf.sample in the sydent-ts package explains each key.',
  'Empty templates.path: the templates shipped with sydent-ts.',
  'Empty email.from: "Sydent Validation <noreply@<server.name>>".',
];

/** Where the config is: `--config`, else SYDENT_CONF, else sydent.conf in the working directory. */
export function configFilePath(opts: Pick<LoadConfigOptions, 'configPath' | 'env' | 'cwd'>): string {
  return resolve(opts.cwd, opts.configPath || opts.env.SYDENT_CONF || 'sydent.conf');
}

/** `--generate-config`: writes a new file with every default and a fresh signing key; never over an existing one. */
export function generateConfig(opts: Pick<LoadConfigOptions, 'configPath' | 'env' | 'cwd'>): string {
  const path = configFilePath(opts);
  if (readIfExists(path) !== null) throw new ConfigError(`config error: ${path} already exists; not writing over it`);
  generateFile(path, configDefaults(opts.env));
  return path;
}

export function loadConfig(opts: LoadConfigOptions): LoadedConfig {
  const cwd = resolve(opts.cwd);
  const path = configFilePath({ ...opts, cwd });
  const log = opts.log ?? ((): void => {});
  const warnings: string[] = [];
  const ctx: BuildContext = {
    cwd,
    warn(message) {
      warnings.push(message);
      log(message);
    },
  };
  const defaults = configDefaults(opts.env);

  let text = readIfExists(path);
  const generated = text === null;
  if (text === null && opts.ifMissing === 'error') {
    throw new ConfigError(
      `config error: ${path} does not exist (sydent-ts --config ${path} --generate-config writes a new one)`,
    );
  }
  if (text === null) {
    text = generateFile(path, defaults);
    log(`config: ${path} did not exist; wrote it with every default and a new signing key`);
  }
  const doc = parse(text, path);
  for (const warning of checkKnownKeys(doc, path)) ctx.warn(warning);

  const ini = new IniReader(doc, flattenDefaults(defaults));
  const section = (name: string): SectionValues => new SectionValues(ini, name, cwd);
  const signingKey = readSigningKey(section(SIGNING_KEY_SECTION));

  const general = readGeneral(section('general'), ctx);
  const config: SydentConfig = {
    configPath: path,
    general,
    db: readDb(section('db'), opts.env),
    http: readHttp(section('http'), ctx, general.serverName),
    email: readEmail(section('email'), general.serverName, general.templatesPath),
    sms: readSms(section('sms')),
    crypto: { signingKey: signingKey.key },
    peers: readPeers(ini, ctx),
  };
  // only once everything is valid, so a file with a mistake is left as it was
  if (signingKey.note) saveSigningKey(path, text, signingKey.key, signingKey.note, log);
  // The file keeps the mode its owner gave it; a key everyone can read is worth a warning at every start.
  const exposed = readableByOthersWarning(path, 'the ed25519 signing key ([crypto] ed25519.signingkey)');
  if (exposed) ctx.warn(`config: ${exposed}`);
  return { config, path, generated, warnings };
}

function readIfExists(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ConfigError(`config error: cannot read ${path}: ${(err as Error).message}`);
  }
}

function generateFile(path: string, defaults: ConfigDefaults): string {
  const crypto = { ...defaults.crypto, [SIGNING_KEY_OPTION]: formatSigningKey(generateSigningKey()) };
  const text = formatIni({ ...defaults, crypto }, GENERATED_HEADER);
  try {
    mkdirSync(dirname(path), { recursive: true });
    // it holds the private signing key; `wx` so a file created meanwhile is never overwritten
    writeFileSync(path, text, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    throw new ConfigError(`config error: cannot write a new config file at ${path}: ${(err as Error).message}`);
  }
  return text;
}

function parse(text: string, path: string): IniDocument {
  try {
    return parseIni(text);
  } catch (err) {
    if (err instanceof IniSyntaxError) throw new ConfigError(`config error: ${path} ${err.message}`);
    throw err;
  }
}

interface SigningKeyRead {
  key: SigningKey;
  /** set when the key must be written to the file, saying why */
  note?: string;
}

/** A missing key is generated and a legacy hex one converted; either must then be saved. */
function readSigningKey(v: SectionValues): SigningKeyRead {
  const value = v.str(SIGNING_KEY_OPTION).trim();
  if (value === '') {
    return {
      key: generateSigningKey(),
      note: 'this server did not yet have an ed25519 signing key; created one and saved it in',
    };
  }
  let parsed;
  try {
    parsed = parseSigningKey(value);
  } catch (err) {
    // the value is secret, so it is not echoed
    throw ConfigError.forValue(SIGNING_KEY_SECTION, SIGNING_KEY_OPTION, '<hidden>', (err as Error).message);
  }
  if (!parsed.legacy) return { key: parsed.key };
  return {
    key: parsed.key,
    note: 'converted the legacy hex signing key to the "ed25519 0 <base64>" format and saved it in',
  };
}

/** Edits only the key's line (or adds it), unlike Sydent which rewrote the whole file without its comments. */
function saveSigningKey(path: string, text: string, key: SigningKey, note: string, log: (line: string) => void): void {
  const updated = setOptionInText(text, SIGNING_KEY_SECTION, SIGNING_KEY_OPTION, formatSigningKey(key));
  try {
    writeFileSync(path, updated);
  } catch (err) {
    throw new ConfigError(
      `config error: [${SIGNING_KEY_SECTION}] ${SIGNING_KEY_OPTION}: cannot save the signing key to ${path}: ${(err as Error).message}`,
      SIGNING_KEY_SECTION,
      SIGNING_KEY_OPTION,
    );
  }
  log(`config: ${note} ${path}`);
}

const DB_ENGINES: readonly DbEngineName[] = ['sqlite', 'postgresql'];
const DEFAULT_POOL_SIZE = 10;

function readDb(v: SectionValues, env: Env): DbConfig {
  const engineText = (v.optional('db.engine') ?? 'sqlite').trim().toLowerCase();
  const engine = DB_ENGINES.find((e) => e === engineText) ?? v.fail('db.engine', 'must be sqlite or postgresql');
  const poolSize = v.has('db.pool_size') ? v.int('db.pool_size', 1) : DEFAULT_POOL_SIZE;
  const dbFile = readDbFile(v);
  if (engine === 'sqlite') return { engine, dbFile, url: null, poolSize };
  const fromFile = v.optional('db.url')?.trim();
  const url = fromFile || env.SYDENT_DB_URL?.trim() || '';
  if (url === '')
    v.fail(
      'db.url',
      'must be set for db.engine = postgresql (postgresql://USER:PASSWORD@HOST:PORT/DATABASE, or SYDENT_DB_URL)',
    );
  try {
    checkPgUrl(url);
  } catch (err) {
    if (fromFile) v.fail('db.url', (err as Error).message, redactPgUrl(url));
    throw new ConfigError(`config error: SYDENT_DB_URL: ${(err as Error).message}`, 'db', 'db.url');
  }
  return { engine, dbFile, url, poolSize };
}

function readDbFile(v: SectionValues): string {
  const file = v.str('db.file');
  if (file === '') v.fail('db.file', 'must name the SQLite database file');
  return file === ':memory:' ? file : v.path('db.file');
}
