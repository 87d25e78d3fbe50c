import { hostname } from 'node:os';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_IP_RANGE_BLACKLIST } from '../defaults.js';
import { SHIPPED_TEMPLATES_PATH } from '../paths.js';
import type { GeneralConfig } from '../types.js';
import type { SectionValues } from '../values.js';
import type { BuildContext } from './context.js';

/** Python logging's level names; WARN and FATAL are its aliases */
const LOG_LEVELS = new Map<string, string>([
  ['CRITICAL', 'CRITICAL'],
  ['FATAL', 'CRITICAL'],
  ['ERROR', 'ERROR'],
  ['WARNING', 'WARNING'],
  ['WARN', 'WARNING'],
  ['INFO', 'INFO'],
  ['DEBUG', 'DEBUG'],
  ['NOTSET', 'NOTSET'],
]);

export function readGeneral(v: SectionValues, ctx: BuildContext): GeneralConfig {
  let serverName = v.str('server.name');
  if (serverName === '') {
    serverName = hostname();
    ctx.warn(
      `config: [general] server.name is not set; using the host name "${serverName}" (it is our name in every signature, so set it)`,
    );
  }

  const logLevel =
    LOG_LEVELS.get(v.str('log.level').toUpperCase()) ??
    v.fail('log.level', 'not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL)');

  const enableV1Access = v.bool('enable_v1_access');
  const homeserverAllowList = v.list('homeserver_allow_list');
  // v1 endpoints have no authentication, so an allow list there would be a false sense of security
  if (homeserverAllowList.length > 0 && enableV1Access) {
    v.fail(
      'homeserver_allow_list',
      'cannot be used while [general] enable_v1_access is true; set enable_v1_access = false',
    );
  }

  const templatesPath = readTemplatesPath(v, ctx);
  const validBrands = subdirectories(templatesPath);
  const brandDefault = v.str('brand.default');
  if (!validBrands.includes(brandDefault)) {
    ctx.warn(`config: [general] brand.default "${brandDefault}" is not a directory in ${templatesPath}`);
  }

  const enableV1Associations = v.bool('enable_v1_associations');
  const ipBlacklist = v.cidrs('ip.blacklist');
  const sentryDsn = v.str('sentry_dsn');
  if (sentryDsn !== '' && !isSentryDsn(sentryDsn))
    v.fail('sentry_dsn', 'not a Sentry DSN (https://<key>@<host>/<project>)');
  return {
    serverName,
    logPath: v.path('log.path'),
    logLevel,
    logBackupCount: v.int('log.backup_count', 0),
    logGroup: v.str('log.group'),
    pidfilePath: v.path('pidfile.path'),
    termsPath: v.path('terms.path'),
    addressLookupLimit: v.int('address_lookup_limit', 1),
    templatesPath,
    validBrands,
    brandDefault,
    prometheusPort: v.optionalPort('prometheus_port'),
    prometheusAddr: v.optional('prometheus_addr') ?? null,
    sentryDsn: sentryDsn === '' ? null : sentryDsn,
    // v1 bind lives under the v1 tree, which is absent without v1 access
    enableV1Associations: enableV1Access && enableV1Associations,
    deleteTokensOnBind: v.bool('delete_tokens_on_bind'),
    ipBlacklist: ipBlacklist.length > 0 ? ipBlacklist : [...DEFAULT_IP_RANGE_BLACKLIST],
    ipWhitelist: v.cidrs('ip.whitelist'),
    homeserverAllowList,
    enableV1Access,
    nodeName: v.optional('node_name')?.trim() || `${hostname()}:${process.pid}`,
    callbackClaimMs:
      (v.has('callback_claim_seconds') ? v.int('callback_claim_seconds', 1) : DEFAULT_CALLBACK_CLAIM_SECONDS) * 1000,
  };
}

/** Longer than any delivery can take (the callback's own time limits end it well before). */
const DEFAULT_CALLBACK_CLAIM_SECONDS = 120;

/** Sentry's DSN form: http(s), a public key as the user, a project id as the last path segment. */
function isSentryDsn(text: string): boolean {
  try {
    const url = new URL(text);
    return (
      (url.protocol === 'https:' || url.protocol === 'http:') && url.username !== '' && /\/\w+$/.test(url.pathname)
    );
  } catch {
    return false;
  }
}

/**
 * Sydent's configs say `templates.path = res`, relative to the working directory, so a folder that is not there
 * is expected after a move: warn, as Sydent did, and use the shipped templates rather than fail on the first mail.
 */
function readTemplatesPath(v: SectionValues, ctx: BuildContext): string {
  const explicit = v.path('templates.path');
  if (explicit !== '') {
    if (isDirectory(explicit)) return explicit;
    ctx.warn(
      `config: [general] templates.path ${explicit} is not a folder; using the templates shipped with sydent-ts (${SHIPPED_TEMPLATES_PATH})`,
    );
  }
  if (!isDirectory(SHIPPED_TEMPLATES_PATH)) {
    v.fail(
      'templates.path',
      `${SHIPPED_TEMPLATES_PATH} does not exist (the templates shipped with sydent-ts are missing)`,
    );
  }
  return SHIPPED_TEMPLATES_PATH;
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function subdirectories(path: string): string[] {
  return readdirSync(path)
    .filter((name) => {
      try {
        return statSync(join(path, name)).isDirectory();
      } catch {
        return false; // a dangling symlink is no brand
      }
    })
    .sort();
}
