import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Query parameters and body keys whose values never reach a log line: credentials, and the 3PID addresses
 * that are personal data.
 */
export const SECRET_PARAMS = new Set([
  'access_token',
  'client_secret',
  'token',
  'private_key',
  'email',
  'address',
  'phone_number',
  'msisdn',
  'public_key',
  'next_link',
  'nextlink',
  'sid',
]);

/** The URL with every secret query value replaced, for request logs. */
export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  if (q === -1) return url;
  const params = new URLSearchParams(url.slice(q + 1));
  let changed = false;
  for (const key of new Set(params.keys())) {
    if (SECRET_PARAMS.has(key.toLowerCase())) {
      params.set(key, '[redacted]');
      changed = true;
    }
  }
  return changed ? `${url.slice(0, q)}?${params.toString()}` : url;
}

/** Sydent's `log.level` takes Python's level names. */
const PYTHON_LEVELS: Record<string, string> = {
  debug: 'debug',
  info: 'info',
  warning: 'warn',
  warn: 'warn',
  error: 'error',
  critical: 'fatal',
  fatal: 'fatal',
  silent: 'silent',
};

export interface LogOptions {
  level: string;
  /** "" logs to stderr */
  path: string;
}

export function createLogger(opts: LogOptions): Logger {
  const level = PYTHON_LEVELS[opts.level.toLowerCase()] ?? 'info';
  const destination = opts.path
    ? pino.destination({ dest: opts.path, mkdir: true, sync: false })
    : pino.destination({ fd: 2, sync: false });
  return pino(
    {
      level,
      // Headers carry bearer tokens and X-Matrix signatures.
      redact: { paths: ['req.headers.authorization', 'headers.authorization'], censor: '[redacted]' },
    },
    destination,
  );
}
