import { pino, type DestinationStream, type Logger } from 'pino';
import { createRequire } from 'node:module';
import type PinoPretty from 'pino-pretty';
import type { GeneralConfig } from './config/types.js';
import { openLogFile } from './log-file.js';
import { VERSION } from './version.js';

export type { Logger };

/**
 * Query parameters and body keys whose values never reach a log line: credentials, and the 3PID addresses
 * that are personal data.
 */
const SECRET_PARAMS = new Set([
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

/** pino's number for `error`: lines at this level or above go to the error reporter */
const ERROR_LEVEL = 50;

interface LogOptions {
  level: string;
  /** "" logs to `stream` (stderr) */
  path: string;
  /** rotated files kept (`log.backup_count`); 0 keeps all. Default 365, as Sydent. */
  backupCount?: number;
  /** `log.group`: a group name or id that may read the file (0640); "" leaves the file 0600 */
  group?: string;
  /** where lines go when there is no path; default stderr. Human-readable when it is a terminal, else JSON. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean };
  /** errors logged (level error and above) are also handed here (Sentry, when `sentry_dsn` is set) */
  reporter?: ErrorReporter | null;
}

/** Where logged errors are sent besides the log (src/error-reporter.ts). */
export interface ErrorReporter {
  report(error: Error | string): void;
  close(): Promise<void>;
}

/** The logger and the file behind it. */
export interface Logging {
  log: Logger;
  /** SIGHUP: close the log file and open `log.path` again (after logrotate moved it); false when logging to stderr */
  reopen: () => boolean;
  /** writes what is buffered, closes the file and the reporter */
  close: () => Promise<void>;
}

let requestCount = 0;

/**
 * The id of a request in the log: one counter for the whole process, so ids are unique across listeners
 * (each fastify instance would start its own at req-1).
 */
export function nextRequestId(): string {
  requestCount = (requestCount + 1) % Number.MAX_SAFE_INTEGER;
  return `req-${requestCount.toString(36)}`;
}

export function openLog(opts: LogOptions): Logging {
  const level = PYTHON_LEVELS[opts.level.toLowerCase()] ?? 'info';
  const reporter = opts.reporter ?? null;
  const file = opts.path
    ? openLogFile({ path: opts.path, backupCount: opts.backupCount ?? 365, group: opts.group ?? '' })
    : null;
  const stream = opts.stream ?? process.stderr;
  const destination: DestinationStream = file ?? (stream.isTTY ? prettyStream(stream) : plainStream(stream));
  const log = pino(
    {
      level,
      timestamp: pino.stdTimeFunctions.isoTime,
      // Headers carry bearer tokens and X-Matrix signatures.
      redact: { paths: ['req.headers.authorization', 'headers.authorization'], censor: '[redacted]' },
      ...(reporter ? { hooks: { logMethod: reportErrors(reporter) } } : {}),
    },
    destination,
  );
  if (file) for (const warning of file.warnings) log.warn(warning);
  return {
    log,
    reopen: () => {
      file?.reopen();
      return file !== null;
    },
    close: async () => {
      await new Promise<void>((resolve) => log.flush(() => resolve()));
      await Promise.all([file?.close(), reporter?.close()]);
    },
  };
}

/**
 * The server's log as `[general]` configures it: level, file and its rotation, and Sentry when `sentry_dsn` is set
 * (its SDK is loaded only then).
 */
export async function openConfiguredLog(general: GeneralConfig): Promise<Logging> {
  const reporter = general.sentryDsn
    ? (await import('./error-reporter.js')).startErrorReporter({
        dsn: general.sentryDsn,
        serverName: general.serverName,
        release: VERSION,
      })
    : null;
  return openLog({
    level: general.logLevel,
    path: general.logPath,
    backupCount: general.logBackupCount,
    group: general.logGroup,
    reporter,
  });
}

/** Hands the Error (or the message) of every line at level error or above to the reporter, then logs it. */
function reportErrors(reporter: ErrorReporter) {
  return function logMethod(this: Logger, args: unknown[], method: (...a: unknown[]) => void, level: number): void {
    if (level >= ERROR_LEVEL) {
      const [first, second] = args;
      const err = typeof first === 'object' && first !== null ? (first as { err?: unknown }).err : undefined;
      if (err instanceof Error) reporter.report(err);
      else if (first instanceof Error) reporter.report(first);
      else reporter.report(typeof first === 'string' ? first : typeof second === 'string' ? second : 'error');
    }
    method.apply(this, args);
  };
}

function plainStream(stream: NodeJS.WritableStream): DestinationStream {
  return stream === process.stderr ? pino.destination({ fd: 2, sync: false }) : stream;
}

// Loaded only for a terminal: a service's start-up does not pay for the formatter.
const requireLazily = createRequire(import.meta.url);

/** One line per entry, local time, colours: for a person at a terminal. */
function prettyStream(stream: NodeJS.WritableStream): DestinationStream {
  const pinoPretty = requireLazily('pino-pretty') as typeof PinoPretty;
  return pinoPretty({
    destination: stream === process.stderr ? 2 : stream,
    colorize: true,
    singleLine: true,
    translateTime: 'SYS:yyyy-mm-dd HH:MM:ss.l',
    ignore: 'pid,hostname',
    sync: true,
  });
}
