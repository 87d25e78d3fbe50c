import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, DEFAULT_IP_RANGE_BLACKLIST, generateConfig, loadConfig } from '../src/config/index.js';
import { setOptionInText } from '../src/config/ini-edit.js';
import { formatIni, interpolate, IniReader, IniSyntaxError, parseIni } from '../src/config/ini.js';
import { PACKAGE_ROOT, SHIPPED_TEMPLATES_PATH } from '../src/config/paths.js';

const SEED_HEX = '4f'.repeat(16) + 'a1'.repeat(16);
const SEED_B64 = Buffer.from(SEED_HEX, 'hex').toString('base64').replace(/=+$/, '');
const KEY_LINE = /^ed25519\.signingkey = ed25519 0 ([A-Za-z0-9+/]{43})$/m;

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

function tmp(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sydent-ts-config-'));
  cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** a directory holding sydent.conf with `text`, plus a signing key unless the text has a [crypto] section */
function withConf(text: string, opts: { key?: boolean } = {}): { dir: string; file: string } {
  const dir = tmp();
  const file = path.join(dir, 'sydent.conf');
  const key = opts.key ?? !text.includes('[crypto]');
  fs.writeFileSync(file, text + (key ? `\n[crypto]\ned25519.signingkey = ed25519 0 ${SEED_B64}\n` : ''));
  return { dir, file };
}

function load(text: string, env: Record<string, string | undefined> = {}) {
  const { dir } = withConf(`[general]\nserver.name = is.example.test\n${text}`);
  return loadConfig({ env, cwd: dir });
}

function loadError(text: string): ConfigError {
  try {
    load(text);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('first run', () => {
  it('writes every section with its defaults and a new key, and reuses that key next time', () => {
    const dir = tmp();
    const lines: string[] = [];
    const first = loadConfig({ env: {}, cwd: dir, log: (l) => lines.push(l) });
    const file = path.join(dir, 'sydent.conf');
    expect(first.generated).toBe(true);
    expect(first.path).toBe(file);
    expect(first.config.configPath).toBe(file);
    const text = fs.readFileSync(file, 'utf8');
    for (const section of ['general', 'db', 'http', 'email', 'sms', 'crypto'])
      expect(text).toContain(`\n[${section}]\n`);
    expect(text).toContain('\nclientapi.http.port = 8090\n');
    expect(text).toContain('\nbodytemplate = Your code is {token}\n');
    const seed = KEY_LINE.exec(text)?.[1];
    expect(seed).toBeDefined();
    expect(Buffer.from(first.config.crypto.signingKey.seed).toString('base64').replace(/=+$/, '')).toBe(seed);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(lines.some((l) => l.includes('did not exist'))).toBe(true);
    // only the guesses are warned about, never the generated keys themselves
    expect(first.warnings).toHaveLength(2);
    expect(first.warnings[0]).toMatch(/server\.name is not set; using the host name/);
    expect(first.warnings[1]).toContain(
      `client_http_base is not set; links in emails and key_validity_url will use https://${os.hostname()},`,
    );

    const second = loadConfig({ env: {}, cwd: dir });
    expect(second.generated).toBe(false);
    expect(second.config.crypto.signingKey).toEqual(first.config.crypto.signingKey);
    expect(fs.readFileSync(file, 'utf8')).toBe(text);
  });

  it('applies the defaults and sydent-ts deviations', () => {
    const dir = tmp();
    const { config } = loadConfig({ env: { SYDENT_SERVER_NAME: 'id.example.org' }, cwd: dir });
    expect(config.general).toMatchObject({
      serverName: 'id.example.org',
      logPath: '',
      logLevel: 'INFO',
      logBackupCount: 365,
      logGroup: '',
      pidfilePath: path.join(dir, 'sydent.pid'),
      termsPath: '',
      addressLookupLimit: 10000,
      templatesPath: SHIPPED_TEMPLATES_PATH,
      brandDefault: 'matrix-org',
      prometheusPort: null,
      prometheusAddr: null,
      sentryDsn: null,
      enableV1Associations: true,
      deleteTokensOnBind: true,
      ipBlacklist: [...DEFAULT_IP_RANGE_BLACKLIST],
      ipWhitelist: [],
      homeserverAllowList: [],
      enableV1Access: true,
    });
    expect(config.general.validBrands).toContain('matrix-org');
    expect(config.db.dbFile).toBe(path.join(dir, 'sydent.db'));
    expect(config.http).toEqual({
      clientApi: { bindAddress: '0.0.0.0', port: 8090 },
      internalApi: null,
      internalAdminToken: '',
      internalAllowedHosts: [],
      replication: { certfile: '', cacert: '', bindAddress: '::', port: 4434 },
      obeyXForwardedFor: false,
      trustedProxies: [],
      submitTokenRatelimit: { burst: 10, rateHz: 1 / 60 },
      drainSeconds: 0,
      shutdownTimeoutMs: 10_000,
      requestTimeouts: { headersMs: 10_000, requestMs: 30_000, keepAliveMs: 65_000 },
      connectionCaps: { client: 1000, clientPerAddress: 100, internal: 100 },
      requestDeadlineMs: 10000,
      sendDeadlineMs: 20000,
      federationVerifyCerts: true,
      federationDnsServers: [],
      federationCaCert: '',
      clientHttpBase: 'https://id.example.org',
      clientHttpBaseDerived: true,
      verifyResponseTemplate: null,
    });
    expect(config.email).toEqual({
      template: null,
      inviteTemplate: null,
      from: 'Sydent Validation <noreply@id.example.org>',
      subject: 'Your Validation Token',
      inviteSubject: '%(sender_display_name)s has invited you to chat',
      inviteSubjectSpace: '%(sender_display_name)s has invited you to a space',
      smtpHost: 'localhost',
      smtpPort: 25,
      smtpUsername: '',
      smtpPassword: '',
      hostname: os.hostname(),
      tlsMode: 'plain',
      defaultWebClientLocation: 'https://app.element.io',
      usernameObfuscateCharacters: 3,
      domainObfuscateCharacters: 3,
      homeserverBlocklist: [],
      roomBlocklist: [],
      keywordBlocklist: [],
      ratelimitSender: { burst: 5, rateHz: 1 / 300 },
    });
    expect(config.sms).toEqual({
      bodyTemplate: 'Your code is {token}',
      username: '',
      password: '',
      originators: {},
      rules: {},
      msisdnRatelimit: { burst: 5, rateHz: 1 / 3600 },
      countryRatelimit: { burst: 50, rateHz: 1 / 60 },
      provider: 'openmarket',
      openmarketUrl: 'https://smsc.openmarket.com/sms/v4/mt',
      twilio: { accountSid: '', authToken: '', url: 'https://api.twilio.com' },
    });
    expect(config.peers).toEqual({});
  });

  it('finds the shipped templates two levels above src/config', () => {
    expect(PACKAGE_ROOT).toBe(path.resolve(import.meta.dirname, '..'));
    expect(fs.existsSync(path.join(SHIPPED_TEMPLATES_PATH, 'matrix-org', 'verify_response_template.html'))).toBe(true);
  });
});

describe('config file location', () => {
  it('uses SYDENT_CONF, relative to the working directory', () => {
    const dir = tmp();
    fs.mkdirSync(path.join(dir, 'data'));
    const { path: p, generated } = loadConfig({ env: { SYDENT_CONF: 'data/my.conf' }, cwd: dir });
    expect(p).toBe(path.join(dir, 'data', 'my.conf'));
    expect(generated).toBe(true);
    expect(fs.existsSync(path.join(dir, 'sydent.conf'))).toBe(false);
  });

  it('prefers configPath over SYDENT_CONF', () => {
    const dir = tmp();
    const { path: p } = loadConfig({ configPath: 'a.conf', env: { SYDENT_CONF: 'b.conf' }, cwd: dir });
    expect(p).toBe(path.join(dir, 'a.conf'));
    expect(fs.existsSync(path.join(dir, 'b.conf'))).toBe(false);
  });

  it('resolves relative paths inside the file against the working directory', () => {
    const dir = tmp();
    fs.mkdirSync(path.join(dir, 'tpl', 'acme'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'tpl', 'other'));
    fs.writeFileSync(path.join(dir, 'tpl', 'not-a-brand'), '');
    fs.mkdirSync(path.join(dir, 'conf'));
    fs.writeFileSync(
      path.join(dir, 'conf', 'sydent.conf'),
      [
        '[general]',
        'server.name = s',
        'log.path = logs/sydent.log',
        'pidfile.path = run/sydent.pid',
        'terms.path = terms.yaml',
        'templates.path = tpl',
        'brand.default = acme',
        '[db]',
        'db.file = data/sydent.db',
        '[http]',
        'replication.https.certfile = certs/me.pem',
        'replication.https.cacert = certs/ca.pem',
        'verify_response_template = old/page.html',
        '[email]',
        'email.template = old/verification.eml',
        'email.invite_template = acme/invite_template.eml.j2',
        `[crypto]\ned25519.signingkey = ed25519 0 ${SEED_B64}`,
      ].join('\n'),
    );
    const { config } = loadConfig({ configPath: 'conf/sydent.conf', env: {}, cwd: dir });
    expect(config.general.logPath).toBe(path.join(dir, 'logs/sydent.log'));
    expect(config.general.pidfilePath).toBe(path.join(dir, 'run/sydent.pid'));
    expect(config.general.termsPath).toBe(path.join(dir, 'terms.yaml'));
    expect(config.general.templatesPath).toBe(path.join(dir, 'tpl'));
    expect(config.general.validBrands).toEqual(['acme', 'other']);
    expect(config.db.dbFile).toBe(path.join(dir, 'data/sydent.db'));
    expect(config.http.replication.certfile).toBe(path.join(dir, 'certs/me.pem'));
    expect(config.http.replication.cacert).toBe(path.join(dir, 'certs/ca.pem'));
    expect(config.http.verifyResponseTemplate).toBe(path.join(dir, 'old/page.html'));
    expect(config.email.template).toBe(path.join(dir, 'old/verification.eml'));
    // Jinja names are relative to the templates folder, as in Sydent
    expect(config.email.inviteTemplate).toBe(path.join(dir, 'tpl/acme/invite_template.eml.j2'));
  });

  it('keeps db.file = :memory: and an empty pid file', () => {
    const { config } = load('pidfile.path =\n[db]\ndb.file = :memory:\n');
    expect(config.db.dbFile).toBe(':memory:');
    expect(config.general.pidfilePath).toBe('');
  });
});

describe('environment variables', () => {
  const env = { SYDENT_SERVER_NAME: 'env.example', SYDENT_PID_FILE: '/run/s.pid', SYDENT_DB_PATH: '/data/s.db' };

  it('are written into a generated file', () => {
    const dir = tmp();
    const { config } = loadConfig({ env, cwd: dir });
    const text = fs.readFileSync(path.join(dir, 'sydent.conf'), 'utf8');
    expect(text).toContain('\nserver.name = env.example\n');
    expect(text).toContain('\npidfile.path = /run/s.pid\n');
    expect(text).toContain('\ndb.file = /data/s.db\n');
    expect(config.general.serverName).toBe('env.example');
    expect(config.general.pidfilePath).toBe('/run/s.pid');
    expect(config.db.dbFile).toBe('/data/s.db');
  });

  it('apply to an existing file only where it does not set the key', () => {
    const { dir } = withConf('[general]\nserver.name = file.example\n');
    const { config } = loadConfig({ env, cwd: dir });
    expect(config.general.serverName).toBe('file.example');
    expect(config.general.pidfilePath).toBe('/run/s.pid');
    expect(config.db.dbFile).toBe('/data/s.db');
  });
});

describe('[DEFAULT] section', () => {
  it('is inherited by every section, and a named section wins', () => {
    const { dir } = withConf(
      [
        '[DEFAULT]',
        'server.name = from-default',
        'email.smtphost = mail.from-default',
        'email.smtpport = 2525',
        '[email]',
        'email.smtpport = 587',
      ].join('\n'),
    );
    const { config, warnings } = loadConfig({ env: {}, cwd: dir });
    expect(config.general.serverName).toBe('from-default');
    expect(config.email.smtpHost).toBe('mail.from-default');
    expect(config.email.smtpPort).toBe(587);
    expect(config.email.from).toBe('Sydent Validation <noreply@from-default>');
    expect(warnings.filter((w) => w.includes('unknown'))).toEqual([]);
  });

  it('of the file beats the built-in defaults and the environment', () => {
    const { dir } = withConf('[DEFAULT]\ndb.file = /x/from-default.db\n');
    const { config } = loadConfig({ env: { SYDENT_DB_PATH: '/x/env.db', SYDENT_SERVER_NAME: 's' }, cwd: dir });
    expect(config.db.dbFile).toBe('/x/from-default.db');
  });
});

describe('values', () => {
  it('reads multi-line blocklists, keeping blank lines and comments out', () => {
    const { config } = load(
      [
        '[email]',
        'email.third_party_invite_homeserver_blocklist =',
        '    evil.example',
        '',
        '    # a comment inside the value',
        '    worse.example  ',
        'email.third_party_invite_room_blocklist = !a:example',
        '  !b:example',
        'email.third_party_invite_keyword_blocklist:',
        '\tSPAM',
        '\tCasino',
        'email.smtphost = after.example',
      ].join('\n'),
    );
    expect(config.email.homeserverBlocklist).toEqual(['evil.example', 'worse.example']);
    expect(config.email.roomBlocklist).toEqual(['!a:example', '!b:example']);
    expect(config.email.keywordBlocklist).toEqual(['spam', 'casino']);
    expect(config.email.smtpHost).toBe('after.example');
  });

  it('interpolates %(name)s and %% except in the invite subjects', () => {
    const { config } = load(
      [
        '[email]',
        'mail.domain = example.org',
        'email.smtphost = smtp.%(mail.domain)s',
        'email.smtppassword = 100%% secret',
        'email.invite.subject = %(sender_display_name)s invited you (100%)',
        'email.invite.subject_space = %(sender_display_name)s: a space',
      ].join('\n'),
    );
    expect(config.email.smtpHost).toBe('smtp.example.org');
    expect(config.email.smtpPassword).toBe('100% secret');
    expect(config.email.inviteSubject).toBe('%(sender_display_name)s invited you (100%)');
    expect(config.email.inviteSubjectSpace).toBe('%(sender_display_name)s: a space');
  });

  it('fills in the {hostname} a Sydent-generated email.from holds', () => {
    const { config } = load('[email]\nemail.from = Sydent Validation <noreply@{hostname}>\n');
    expect(config.email.from).toBe('Sydent Validation <noreply@is.example.test>');
    expect(load('[email]\nemail.from = id@example.org\n').config.email.from).toBe('id@example.org');
  });

  it('parses the optional keys', () => {
    const { config } = load(
      [
        'prometheus_port = 9090',
        'prometheus_addr =',
        'sentry_dsn = https://k@sentry.example/1',
        'ip.blacklist = 10.0.0.0/8, 192.0.2.1 ,2001:db8::/32',
        'ip.whitelist = 10.1.0.0/16',
        'homeserver_allow_list = a.example, b.example,',
        'enable_v1_access = false',
        'log.level = debug',
        'log.backup_count = 7',
        'log.group = adm',
        '[http]',
        'internalapi.http.port = 8091',
        'internalapi.admin_token = s3cret',
        'internalapi.http.allowed_hosts = Debug.Example.org., 192.0.2.7, [0:0::1]',
        'obey_x_forwarded_for = yes',
        'trusted_proxies = 127.0.0.1, ::1',
        'drain_seconds = 15',
        'federation.verifycerts = off',
        'client_http_base = https://id.example.org/',
      ].join('\n'),
    );
    expect(config.general.prometheusPort).toBe(9090);
    expect(config.general.prometheusAddr).toBe('');
    expect(config.general.sentryDsn).toBe('https://k@sentry.example/1');
    expect(config.general.ipBlacklist).toEqual(['10.0.0.0/8', '192.0.2.1/32', '2001:db8::/32']);
    expect(config.general.ipWhitelist).toEqual(['10.1.0.0/16']);
    expect(config.general.homeserverAllowList).toEqual(['a.example', 'b.example']);
    expect(config.general.enableV1Access).toBe(false);
    expect(config.general.enableV1Associations).toBe(false);
    expect(config.general.logLevel).toBe('DEBUG');
    expect(config.general.logBackupCount).toBe(7);
    expect(config.general.logGroup).toBe('adm');
    expect(config.http.drainSeconds).toBe(15);
    expect(config.http.internalApi).toEqual({ bindAddress: '127.0.0.1', port: 8091 });
    expect(config.http.internalAdminToken).toBe('s3cret');
    expect(config.http.internalAllowedHosts).toEqual(['debug.example.org', '192.0.2.7', '::1']);
    expect(config.http.obeyXForwardedFor).toBe(true);
    expect(config.http.trustedProxies).toEqual(['127.0.0.1/32', '::1/128']);
    expect(config.http.federationVerifyCerts).toBe(false);
    expect(config.http.clientHttpBase).toBe('https://id.example.org');
    expect(config.http.clientHttpBaseDerived).toBe(false);
  });

  it('derives client_http_base from server.name, never from the listener address', () => {
    const v4 = load('[http]\nclientapi.http.bind_address = 192.0.2.5\nclientapi.http.port = 8100\n');
    expect(v4.config.http.clientHttpBase).toBe('https://is.example.test');
    expect(v4.config.http.clientHttpBaseDerived).toBe(true);
    expect(v4.warnings).toContain(
      'config: [http] client_http_base is not set; links in emails and key_validity_url will use https://is.example.test, set it to the public URL',
    );
    expect(load('[http]\nclientapi.http.bind_address = ::1\n').config.http.clientHttpBase).toBe(
      'https://is.example.test',
    );
    const { dir } = withConf('[general]\nserver.name = not a host name\n');
    expect(() => loadConfig({ env: {}, cwd: dir })).toThrow(
      /\[http\] client_http_base = "": is not set, and https:\/\/<server\.name>/,
    );
  });

  it('reads federation.dns_servers and federation.cacert (sydent-ts keys)', () => {
    const { dir } = withConf(
      [
        '[general]',
        'server.name = is.example.test',
        '[http]',
        'federation.dns_servers = 127.0.0.1, 127.0.0.1:5353 , [::1]:53, ::1,',
        'federation.cacert = ca.pem',
      ].join('\n'),
    );
    fs.writeFileSync(path.join(dir, 'ca.pem'), '');
    const { config } = loadConfig({ env: {}, cwd: dir });
    expect(config.http.federationDnsServers).toEqual(['127.0.0.1', '127.0.0.1:5353', '[::1]:53', '::1']);
    expect(config.http.federationCaCert).toBe(path.join(dir, 'ca.pem'));
  });

  it.each([
    ['0', 'plain'],
    ['', 'plain'],
    ['plain', 'plain'],
    ['None', 'plain'],
    ['SSL', 'ssl'],
    ['tls', 'ssl'],
    ['STARTTLS', 'starttls'],
    ['StartTLS', 'starttls'],
  ])('email.tlsmode = %s is %s', (value, mode) => {
    expect(load(`[email]\nemail.tlsmode = ${value}\n`).config.email.tlsMode).toBe(mode);
  });

  it('reads originators and SMS rules', () => {
    const { config } = load(
      [
        '[sms]',
        'bodyTemplate = Code: {token}',
        'originators.44 = long:447700900000, short:12345',
        'originators.default = alpha:Matrix',
        'smsrule.1 = reject',
        'smsrule.44 = allow',
        'msisdn.ratelimit.rate_hz = 0.0033',
        'country.ratelimit.burst = 7',
      ].join('\n'),
    );
    expect(config.sms.bodyTemplate).toBe('Code: {token}');
    expect(config.sms.originators).toEqual({
      '44': [
        { type: 'long', text: '447700900000' },
        { type: 'short', text: '12345' },
      ],
      default: [{ type: 'alpha', text: 'Matrix' }],
    });
    expect(config.sms.rules).toEqual({ '1': 'reject', '44': 'allow' });
    expect(config.sms.msisdnRatelimit).toEqual({ burst: 5, rateHz: 0.0033 });
    expect(config.sms.countryRatelimit).toEqual({ burst: 7, rateHz: 1 / 60 });
  });

  it('reads the SMS provider keys (openmarket.url, provider = twilio and its account)', () => {
    const om = load('[sms]\nopenmarket.url = http://127.0.0.1:9000/sms/v4/mt\n').config.sms;
    expect(om.provider).toBe('openmarket');
    expect(om.openmarketUrl).toBe('http://127.0.0.1:9000/sms/v4/mt');
    const tw = load(
      [
        '[sms]',
        'provider = Twilio',
        'twilio.account_sid = AC123',
        'twilio.auth_token = secret',
        'twilio.url = http://127.0.0.1:9001/',
      ].join('\n'),
    ).config.sms;
    expect(tw.provider).toBe('twilio');
    expect(tw.twilio).toEqual({ accountSid: 'AC123', authToken: 'secret', url: 'http://127.0.0.1:9001' });
  });

  it('reads [peer.NAME] sections', () => {
    const { config, warnings } = load(
      [
        '[peer.example.com]',
        'base_replication_url = https://internal.example.com:4434',
        '[peer.other.example]',
        'base_replication_url = http://10.0.0.2:4434/',
      ].join('\n'),
    );
    expect(config.peers).toEqual({
      'example.com': { baseReplicationUrl: 'https://internal.example.com:4434' },
      'other.example': { baseReplicationUrl: 'http://10.0.0.2:4434/' },
    });
    expect(warnings.filter((w) => w.includes('peer'))).toEqual([]);
  });
});

describe('unknown keys', () => {
  it('far from any known key are reported; inherited, pattern and Sydent-only keys are not', () => {
    const { dir } = withConf(
      [
        '[DEFAULT]',
        'server.name = s',
        'no.such.default = 1',
        '[general]',
        'sentry_dsn = https://k@sentry.example/1',
        'db.file = misplaced.db',
        '[http]',
        'verify_response_template = res/x.html',
        'color = blue',
        '[email]',
        'email.template = res/x.eml',
        '[sms]',
        'originators.44 = alpha:X',
        'smsrule.33 = reject',
        '[peer.x.example]',
        'base_replication_url = https://x.example',
        'port = 1',
      ].join('\n'),
    );
    const lines: string[] = [];
    const { warnings } = loadConfig({ env: {}, cwd: dir, log: (l) => lines.push(l) });
    const unknown = warnings.filter((w) => w.includes('unknown'));
    expect(unknown).toEqual([
      'config: unknown key [DEFAULT] no.such.default',
      'config: unknown key [general] db.file (it belongs in [db])',
      'config: unknown key [http] color',
      'config: unknown key [peer.x.example] port',
    ]);
    for (const w of unknown) expect(lines).toContain(w);
  });

  it.each([
    ['sever.name = typo', '[general] sever.name: unknown key, did you mean server.name?'],
    ['[http]\nclientapi.http.prot = 1', '[http] clientapi.http.prot: unknown key, did you mean clientapi.http.port?'],
    ['[email]\nemail.smtp_port = 25', '[email] email.smtp_port: unknown key, did you mean email.smtpport?'],
    [
      '[DEFAULT]\ninternalapi.http.prot = 1',
      '[DEFAULT] internalapi.http.prot: unknown key, did you mean internalapi.http.port?',
    ],
    [
      '[peer.x.example]\nbase_replication_uri = https://x',
      '[peer.x.example] base_replication_uri: unknown key, did you mean base_replication_url?',
    ],
  ])('one or two letters off a known key stop start-up with a suggestion: %j', (text, message) => {
    const err = loadError(text);
    expect(err.message).toBe(`config error: ${message}`);
  });

  it('an unknown section stops start-up, with a suggestion when one is close', () => {
    const close = withConf('[htpp]\nclientapi.http.port = 1');
    expect(() => loadConfig({ env: {}, cwd: close.dir })).toThrow(
      `config error: ${close.file}: unknown section [htpp]: did you mean [http]?`,
    );
    const upper = withConf('[HTTP]\nclientapi.http.port = 1');
    expect(() => loadConfig({ env: {}, cwd: upper.dir })).toThrow(
      `config error: ${upper.file}: unknown section [HTTP]: did you mean [http]?`,
    );
    const far = withConf('[mystery]\na = b');
    expect(() => loadConfig({ env: {}, cwd: far.dir })).toThrow(
      `config error: ${far.file}: unknown section [mystery]: the sections are [general], [db], [http], [email], [sms], [crypto] and [peer.NAME]`,
    );
  });
});

describe('a config path that does not exist', () => {
  it('is an error when the command line names it, and nothing is written', () => {
    const dir = tmp();
    expect(() => loadConfig({ configPath: 'typo.conf', env: {}, cwd: dir, ifMissing: 'error' })).toThrow(
      `config error: ${path.join(dir, 'typo.conf')} does not exist (sydent-ts --config ${path.join(dir, 'typo.conf')} --generate-config writes a new one)`,
    );
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('--generate-config writes it with a new key, and never over an existing file', () => {
    const dir = tmp();
    const written = generateConfig({ configPath: 'new.conf', env: {}, cwd: dir });
    expect(written).toBe(path.join(dir, 'new.conf'));
    const text = fs.readFileSync(written, 'utf8');
    expect(text).toMatch(KEY_LINE);
    expect(fs.statSync(written).mode & 0o777).toBe(0o600);
    expect(() => generateConfig({ configPath: 'new.conf', env: {}, cwd: dir })).toThrow(
      `config error: ${written} already exists; not writing over it`,
    );
    expect(fs.readFileSync(written, 'utf8')).toBe(text);
    expect(loadConfig({ configPath: 'new.conf', env: {}, cwd: dir, ifMissing: 'error' }).generated).toBe(false);
  });
});

describe('invalid values', () => {
  it.each([
    ['[http]\nclientapi.http.port = 80x', '[http] clientapi.http.port = "80x": not a port number (1-65535)'],
    ['[http]\nclientapi.http.port = 0', '[http] clientapi.http.port'],
    ['[http]\nclientapi.http.port = 65536', '[http] clientapi.http.port'],
    ['[http]\ninternalapi.http.port = -1', '[http] internalapi.http.port'],
    ['[http]\nreplication.https.port = 4434.5', '[http] replication.https.port'],
    ['[email]\nemail.smtpport = smtp', '[email] email.smtpport'],
    ['prometheus_port = 1e3', '[general] prometheus_port'],
    ['address_lookup_limit = 0', '[general] address_lookup_limit = "0": not a positive integer'],
    ['address_lookup_limit = ten', '[general] address_lookup_limit'],
    ['enable_v1_access = ture', '[general] enable_v1_access = "ture": not a boolean'],
    ['delete_tokens_on_bind = 2', '[general] delete_tokens_on_bind'],
    ['enable_v1_associations = maybe', '[general] enable_v1_associations'],
    ['[http]\nobey_x_forwarded_for = sure', '[http] obey_x_forwarded_for'],
    ['[http]\nfederation.verifycerts = ', '[http] federation.verifycerts'],
    ['[http]\nfederation.verifycerts = constructor', '[http] federation.verifycerts'],
    ['[email]\nemail.tlsmode = constructor', '[email] email.tlsmode'],
    ['[email]\nemail.tlsmode = SOMETIMES', '[email] email.tlsmode = "SOMETIMES": not a TLS mode'],
    ['[email]\nemail.ratelimit_sender.burst = 0', '[email] email.ratelimit_sender.burst'],
    [
      '[email]\nemail.ratelimit_sender.rate_hz = 0',
      '[email] email.ratelimit_sender.rate_hz = "0": not a positive number',
    ],
    ['[email]\nemail.ratelimit_sender.rate_hz = 1/300', '[email] email.ratelimit_sender.rate_hz'],
    ['[sms]\nmsisdn.ratelimit.burst = 2.5', '[sms] msisdn.ratelimit.burst'],
    ['[sms]\ncountry.ratelimit.rate_hz = nan', '[sms] country.ratelimit.rate_hz'],
    [
      '[email]\nemail.third_party_invite_username_obfuscate_characters = -1',
      '[email] email.third_party_invite_username_obfuscate_characters = "-1": not an integer >= 0',
    ],
    [
      'ip.blacklist = 10.0.0.0/33',
      '[general] ip.blacklist = "10.0.0.0/33": "10.0.0.0/33" is not an IP address or CIDR range',
    ],
    ['ip.blacklist = 10.0.0.0/8, example.com', '[general] ip.blacklist'],
    ['ip.whitelist = 2001:db8::/129', '[general] ip.whitelist'],
    ['ip.whitelist = 300.1.1.1', '[general] ip.whitelist'],
    ['[http]\ntrusted_proxies = proxy.local', '[http] trusted_proxies'],
    [
      '[http]\nfederation.dns_servers = dns.example',
      '[http] federation.dns_servers = "dns.example": "dns.example" is not an IP address',
    ],
    ['[http]\nfederation.dns_servers = 127.0.0.1:0', '[http] federation.dns_servers'],
    ['[http]\nfederation.dns_servers = 192.0.2.1:65536', '[http] federation.dns_servers'],
    ['[http]\nfederation.dns_servers = [127.0.0.1]:53', '[http] federation.dns_servers'],
    ['[http]\nsubmit_token.ratelimit.burst = 0', '[http] submit_token.ratelimit.burst'],
    ['[http]\nsubmit_token.ratelimit.rate_hz = -1', '[http] submit_token.ratelimit.rate_hz'],
    [
      '[http]\ninternalapi.http.allowed_hosts = debug.example.org:8091',
      '[http] internalapi.http.allowed_hosts = "debug.example.org:8091"',
    ],
    ['[http]\ninternalapi.http.allowed_hosts = http://debug.example.org', '[http] internalapi.http.allowed_hosts'],
    ['[http]\nfederation.cacert = no-such-ca.pem', '[http] federation.cacert = "no-such-ca.pem": '],
    [
      '[sms]\noriginators.44 = long:1:2',
      '[sms] originators.44 = "long:1:2": Originators must be in form: long:<number>, short:<number> or alpha:<text>, separated by commas',
    ],
    ['[sms]\noriginators.44 = 447700900000', '[sms] originators.44 = "447700900000": Originators must be in form'],
    [
      '[sms]\noriginators.44 = medium:123',
      '[sms] originators.44 = "medium:123": Invalid originator type: valid types are long, short and alpha',
    ],
    ['[sms]\noriginators.uk = long:1', '[sms] originators.uk'],
    [
      '[sms]\nsmsrule.44 = deny',
      `[sms] smsrule.44 = "deny": Invalid SMS rule action: deny, expecting 'allow' or 'reject'`,
    ],
    ['[sms]\nsmsrule.default = reject', '[sms] smsrule.default'],
    ['[sms]\nprovider = nexmo', '[sms] provider = "nexmo": not an SMS provider: use openmarket or twilio'],
    [
      '[sms]\nprovider = twilio\ntwilio.auth_token = t',
      '[sms] twilio.account_sid = "": required when provider = twilio',
    ],
    [
      '[sms]\nprovider = twilio\ntwilio.account_sid = AC1',
      '[sms] twilio.auth_token = "": required when provider = twilio',
    ],
    [
      '[sms]\nopenmarket.url = smsc.openmarket.com',
      '[sms] openmarket.url = "smsc.openmarket.com": not an http or https URL',
    ],
    ['[sms]\ntwilio.url = ftp://api.twilio.com', '[sms] twilio.url = "ftp://api.twilio.com": not an http or https URL'],
    [
      'homeserver_allow_list = hs.example',
      '[general] homeserver_allow_list = "hs.example": cannot be used while [general] enable_v1_access is true',
    ],
    ['log.level = chatty', '[general] log.level'],
    ['log.backup_count = -1', '[general] log.backup_count = "-1": not an integer >= 0'],
    ['log.backup_count = many', '[general] log.backup_count'],
    ['sentry_dsn = sentry.example.com/1', '[general] sentry_dsn = "sentry.example.com/1": not a Sentry DSN'],
    [
      'sentry_dsn = https://sentry.example.com/1',
      '[general] sentry_dsn = "https://sentry.example.com/1": not a Sentry DSN',
    ],
    ['sentry_dsn = https://key@sentry.example.com/', '[general] sentry_dsn'],
    ['[http]\ndrain_seconds = 2.5', '[http] drain_seconds = "2.5": not an integer >= 0'],
    ['[http]\nshutdown_timeout_seconds = 0', '[http] shutdown_timeout_seconds = "0": not a positive number'],
    ['[http]\nheaders_timeout_seconds = soon', '[http] headers_timeout_seconds = "soon": not a positive number'],
    [
      '[http]\nrequest_timeout_seconds = 5',
      '[http] request_timeout_seconds = "5": must not be shorter than headers_timeout_seconds',
    ],
    ['[http]\nkeepalive_timeout_seconds = -1', '[http] keepalive_timeout_seconds'],
    [
      '[http]\nclientapi.http.max_connections = 0',
      '[http] clientapi.http.max_connections = "0": not a positive integer',
    ],
    [
      '[http]\nclientapi.http.max_connections_per_address = -1',
      '[http] clientapi.http.max_connections_per_address = "-1": not an integer >= 0',
    ],
    ['[http]\ninternalapi.http.max_connections = lots', '[http] internalapi.http.max_connections'],
    ['[http]\nclient_http_base = id.example.org', '[http] client_http_base'],
    ['[email]\nemail.from = Sydent <noreply>', '[email] email.from'],
    ['[email]\nemail.smtphost = 100% sure', '[email] email.smtphost = "100% sure": \'%\' must be followed by'],
    [
      '[email]\nemail.smtphost = %(nowhere)s',
      '[email] email.smtphost = "%(nowhere)s": %(nowhere)s refers to a key that is not set',
    ],
    ['[db]\ndb.file =', '[db] db.file'],
    ['[peer.x]\nbase_replication_url = x:4434', '[peer.x] base_replication_url'],
  ])('%j', (text, expected) => {
    const err = loadError(text);
    expect(err.message).toContain(`config error: ${expected}`);
    expect(err.message).not.toContain('\n');
  });

  it('a templates.path that is missing or not a folder: a warning naming it, and the shipped templates', () => {
    for (const value of ['res', 'sydent.conf']) {
      const { dir } = withConf(`[general]\nserver.name = s\ntemplates.path = ${value}\n`);
      const { config, warnings } = loadConfig({ env: {}, cwd: dir });
      expect(config.general.templatesPath).toBe(SHIPPED_TEMPLATES_PATH);
      expect(config.general.validBrands).toContain('matrix-org');
      expect(warnings).toContain(
        `config: [general] templates.path ${path.join(dir, value)} is not a folder; using the templates shipped with sydent-ts (${SHIPPED_TEMPLATES_PATH})`,
      );
    }
  });

  it.each([
    ['ed25519 0 notakey', /seed must be 32 bytes/],
    [`curve25519 0 ${SEED_B64}`, /unknown signing key algorithm/],
    [`ed25519 ${SEED_B64}`, /expected 3: "ed25519 <version> <base64 seed>"/],
    ['abcdef', /legacy 64-character hex seed/],
    [`ed25519 0:1 ${SEED_B64}`, /version/],
  ])('rejects the signing key %j without echoing it', (value, problem) => {
    const { dir } = withConf(`[general]\nserver.name = s\n[crypto]\ned25519.signingkey = ${value}\n`);
    let err: unknown;
    try {
      loadConfig({ env: {}, cwd: dir });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const message = (err as Error).message;
    expect(message).toMatch(/^config error: \[crypto\] ed25519\.signingkey = "<hidden>": /);
    expect(message).toMatch(problem);
    expect(message).not.toContain(value);
  });

  it('reports syntax errors with the line number', () => {
    const { dir } = withConf('[general]\nserver.name = s\njust some words\n');
    expect(() => loadConfig({ env: {}, cwd: dir })).toThrow(
      /^config error: .*sydent\.conf line 3: expected "key = value"/,
    );
  });

  it('leaves the file alone when a value is invalid', () => {
    const text = '[general]\nserver.name = s\naddress_lookup_limit = -5\n';
    const { dir, file } = withConf(text, { key: false });
    expect(() => loadConfig({ env: {}, cwd: dir })).toThrow(ConfigError);
    expect(fs.readFileSync(file, 'utf8')).toBe(text);
  });
});

describe('signing key in an existing file', () => {
  /** loads `text` without a usable key and returns the new file text and the key line added */
  function addKey(text: string): { after: string; config: ReturnType<typeof loadConfig>['config']; lines: string[] } {
    const { dir, file } = withConf(text, { key: false });
    const lines: string[] = [];
    const { config } = loadConfig({ env: {}, cwd: dir, log: (l) => lines.push(l) });
    return { after: fs.readFileSync(file, 'utf8'), config, lines };
  }

  it('adds a [crypto] section at the end, leaving the rest byte-identical', () => {
    const text = '# my comments\n[general]\nserver.name = s   \n\n; more\n[email]\nemail.smtphost=mx\n';
    const { after, config, lines } = addKey(text);
    expect(after.startsWith(text)).toBe(true);
    const added = after.slice(text.length);
    expect(added).toMatch(/^\n\[crypto\]\ned25519\.signingkey = ed25519 0 [A-Za-z0-9+/]{43}\n$/);
    expect(Buffer.from(config.crypto.signingKey.seed).toString('base64').replace(/=+$/, '')).toBe(
      KEY_LINE.exec(after)?.[1],
    );
    expect(lines.some((l) => l.includes('did not yet have an ed25519 signing key'))).toBe(true);
  });

  it('inserts the line into an existing [crypto] section', () => {
    const before = '[crypto]\n# keep me\nother.thing = x\n    continued\n\n';
    const rest = '[general]\nserver.name = s\n';
    const { after } = addKey(before + rest);
    const keyLine = KEY_LINE.exec(after)?.[0] ?? '';
    expect(after).toBe(`[crypto]\n# keep me\nother.thing = x\n    continued\n${keyLine}\n\n${rest}`);
  });

  it('fills in an empty key line in place, keeping CRLF and a missing final newline', () => {
    const text = '[crypto]\r\n  ed25519.signingkey =\r\n  extra = 1\r\n[general]\r\nserver.name = s';
    const { after, config } = addKey(text);
    const m = / {2}ed25519\.signingkey = (ed25519 0 [A-Za-z0-9+/]{43})\r\n/.exec(after);
    expect(m).not.toBeNull();
    expect(after.replace(m?.[1] ?? '', '')).toBe(text.replace('ed25519.signingkey =', 'ed25519.signingkey = '));
    expect(config.crypto.signingKey.version).toBe('0');
    // the indentation was kept, so `extra` is still a key of its own and not part of the signing key
    expect(parseIni(after).sections.get('crypto')?.options.has('extra')).toBe(true);
  });

  it('adds the key to a file that ends without a newline', () => {
    const text = '[general]\nserver.name = s';
    const { after } = addKey(text);
    expect(after).toMatch(/^\[general\]\nserver\.name = s\n\n\[crypto\]\ned25519\.signingkey = ed25519 0 \S{43}\n$/);
  });

  it('converts a legacy hex key to the current format, keeping the seed', () => {
    const text = `[general]\nserver.name = s\n\n[crypto]\ned25519.signingkey = ${SEED_HEX}\n# trailer\n`;
    const { after, config, lines } = addKey(text);
    expect(after).toBe(text.replace(SEED_HEX, `ed25519 0 ${SEED_B64}`));
    expect(Buffer.from(config.crypto.signingKey.seed).toString('hex')).toBe(SEED_HEX);
    expect(config.crypto.signingKey.version).toBe('0');
    expect(lines.some((l) => l.includes('legacy hex'))).toBe(true);
  });

  it('puts a key that sits under [DEFAULT] in hex into [crypto]', () => {
    const text = `[DEFAULT]\ned25519.signingkey = ${SEED_HEX}\n[general]\nserver.name = s\n`;
    const { after, config } = addKey(text);
    expect(after).toBe(`${text}\n[crypto]\ned25519.signingkey = ed25519 0 ${SEED_B64}\n`);
    expect(Buffer.from(config.crypto.signingKey.seed).toString('hex')).toBe(SEED_HEX);
  });

  it('accepts URL-safe, padded and other-version keys without rewriting', () => {
    const urlSafe = Buffer.from('fb'.repeat(32), 'hex').toString('base64url');
    for (const value of [`ed25519 0 ${urlSafe}`, `ed25519 a_1 ${SEED_B64}=`]) {
      const text = `[general]\nserver.name = s\n[crypto]\ned25519.signingkey = ${value}\n`;
      const { after, config } = addKey(text);
      expect(after).toBe(text);
      expect(config.crypto.signingKey.seed).toHaveLength(32);
    }
    expect(addKey(`[crypto]\ned25519.signingkey = ed25519 a_1 ${SEED_B64}\n`).config.crypto.signingKey.version).toBe(
      'a_1',
    );
  });
});

describe('the sample config', () => {
  it('loads as is, with no unknown keys, and takes a key', () => {
    const dir = tmp();
    const sample = fs.readFileSync(path.join(PACKAGE_ROOT, 'config', 'sydent.conf.sample'), 'utf8');
    fs.writeFileSync(path.join(dir, 'sydent.conf'), sample);
    const { warnings, config } = loadConfig({ env: { SYDENT_SERVER_NAME: 's' }, cwd: dir });
    expect(warnings.filter((w) => w.includes('unknown'))).toEqual([]);
    expect(config.http.clientApi.port).toBe(8090);
    const after = fs.readFileSync(path.join(dir, 'sydent.conf'), 'utf8');
    expect(after.replace(KEY_LINE, '').replace('[crypto]\n\n', '[crypto]\n')).toBe(sample);
  });

  it('names every key the loader knows', () => {
    const sample = fs.readFileSync(path.join(PACKAGE_ROOT, 'config', 'sydent.conf.sample'), 'utf8');
    const generated = tmp();
    loadConfig({ env: {}, cwd: generated });
    const doc = parseIni(fs.readFileSync(path.join(generated, 'sydent.conf'), 'utf8'));
    for (const section of doc.sections.values()) {
      for (const key of section.options.keys()) expect(sample).toContain(`\n#${key} =`);
    }
  });
});

describe('ini', () => {
  it('parses like ConfigParser', () => {
    const doc = parseIni(
      [
        '\uFEFF; comment',
        '[peer.a.example]',
        'Base_Replication_URL : https://a.example = still value # not a comment',
        '[Mixed.Case]',
        'k=v',
        '  indented = option',
        'empty =',
        '   ',
        '  # indented comment',
        '[DEFAULT]',
        'd = 1',
      ].join('\r\n'),
    );
    expect([...doc.sections.keys()]).toEqual(['peer.a.example', 'Mixed.Case']);
    expect(doc.sections.get('peer.a.example')?.options.get('base_replication_url')?.value).toBe(
      'https://a.example = still value # not a comment',
    );
    const mixed = doc.sections.get('Mixed.Case');
    // an indented line right after a key's line continues its value
    expect(mixed?.options.get('k')?.value).toBe('v\nindented = option');
    expect(mixed?.options.get('empty')?.value).toBe('');
    expect(doc.defaults?.options.get('d')?.value).toBe('1');
  });

  it('keeps a blank line inside a value only when more indented lines follow', () => {
    const doc = parseIni('[s]\na = 1\n\n  2\n\nb = 3\n\n');
    expect(doc.sections.get('s')?.options.get('a')?.value).toBe('1\n\n2');
    expect(doc.sections.get('s')?.options.get('b')?.value).toBe('3');
  });

  it.each([
    ['k = v\n', /line 1: a key appears before the first \[section\] header/],
    ['[s]\na = 1\n[s]\n', /line 3: section \[s\] appears more than once/],
    ['[s]\na = 1\nA = 2\n', /line 3: key a appears more than once in \[s\]/],
    ['[s]\n= 1\n', /line 2: expected "key = value"/],
  ])('refuses %j', (text, error) => {
    expect(() => parseIni(text)).toThrow(IniSyntaxError);
    expect(() => parseIni(text)).toThrow(error);
  });

  it('interpolates from the section, then DEFAULT, then the fallback', () => {
    const reader = new IniReader(
      parseIni('[DEFAULT]\nhost = d.example\n[a]\nurl = https://%(HOST)s/%(path)s\npath = x%%y\nloop = %(loop)s\n'),
      new Map([['port', '1']]),
    );
    expect(reader.get('a', 'url')).toBe('https://d.example/x%y');
    expect(reader.raw('a', 'url')).toBe('https://%(HOST)s/%(path)s');
    expect(reader.get('b', 'port')).toBe('1');
    expect(() => reader.get('a', 'loop')).toThrow(/nest more than 10 deep/);
    expect(() => interpolate('%(x', () => 'v')).toThrow(/bad %\(name\)s reference/);
  });

  it('writes what it reads back', () => {
    const data = { general: { a: '1', empty: '' }, 'peer.x': { list: 'one\ntwo\n\nthree', starts: '\nfirst' } };
    const text = formatIni(data, ['header']);
    expect(text).toBe(
      '# header\n\n[general]\na = 1\nempty =\n\n[peer.x]\nlist = one\n    two\n\n    three\nstarts =\n    first\n',
    );
    const doc = parseIni(text);
    expect(doc.sections.get('peer.x')?.options.get('list')?.value).toBe('one\ntwo\n\nthree');
    expect(doc.sections.get('peer.x')?.options.get('starts')?.value).toBe('\nfirst');
  });

  it('sets an option in an empty text', () => {
    expect(setOptionInText('', 'crypto', 'k', 'v')).toBe('[crypto]\nk = v\n');
  });
});

describe('[general] node_name and callback_claim_seconds', () => {
  it('name this node host:pid and keep a callback claim 2 minutes unless set; a generated file names neither', () => {
    const { config } = load('');
    expect(config.general.nodeName).toBe(`${os.hostname()}:${process.pid}`);
    expect(config.general.callbackClaimMs).toBe(120_000);
    const set = load('node_name = is-2\ncallback_claim_seconds = 30\n').config.general;
    expect(set).toMatchObject({ nodeName: 'is-2', callbackClaimMs: 30_000 });
    const written = fs.readFileSync(generateConfig({ env: {}, cwd: tmp() }), 'utf8');
    expect(written).not.toMatch(/node_name|callback_claim_seconds/);
    expect(loadError('callback_claim_seconds = 0\n').message).toMatch(/callback_claim_seconds/);
  });
});

describe('[db] engine', () => {
  it('is SQLite unless set, with a pool of 10 and no URL; a generated file names neither', () => {
    const { config } = load('');
    expect(config.db).toMatchObject({ engine: 'sqlite', url: null, poolSize: 10 });
    const dir = tmp();
    const written = fs.readFileSync(generateConfig({ env: {}, cwd: dir }), 'utf8');
    expect(written).not.toMatch(/db\.(engine|url|pool_size)/);
  });

  it('reads postgresql with db.url and db.pool_size; SYDENT_DB_URL where the file sets no URL', () => {
    const url = 'postgresql://sydent:secret@db.example:5433/sydent';
    expect(load(`[db]\ndb.engine = postgresql\ndb.url = ${url}\ndb.pool_size = 4\n`).config.db).toMatchObject({
      engine: 'postgresql',
      url,
      poolSize: 4,
    });
    expect(load('[db]\ndb.engine = PostgreSQL\n', { SYDENT_DB_URL: url }).config.db).toMatchObject({
      engine: 'postgresql',
      url,
    });
    const fromFile = 'postgresql://other@h/x';
    expect(load(`[db]\ndb.engine = postgresql\ndb.url = ${fromFile}\n`, { SYDENT_DB_URL: url }).config.db.url).toBe(
      fromFile,
    );
  });

  it('refuses an unknown engine, a missing or bad URL and a bad pool size, naming the key and never the password', () => {
    expect(loadError('[db]\ndb.engine = mysql\n').message).toMatch(
      /\[db\] db\.engine = "mysql": must be sqlite or postgresql/,
    );
    expect(loadError('[db]\ndb.engine = postgresql\n').message).toMatch(
      /\[db\] db\.url .*must be set for db\.engine = postgresql/,
    );
    const bad = loadError('[db]\ndb.engine = postgresql\ndb.url = mysql://u:hunter2@h/x\n');
    expect(bad.message).toMatch(/\[db\] db\.url .*not a PostgreSQL URL/);
    expect(bad.message).not.toContain('hunter2');
    expect(loadError('[db]\ndb.engine = postgresql\ndb.url = postgresql://h/x\ndb.pool_size = 0\n').message).toMatch(
      /\[db\] db\.pool_size = "0": not a positive integer/,
    );
  });
});
