import { ConfigError, generateConfig, loadConfig } from './config/index.js';
import { LogFileError } from './log-file.js';
import { openConfiguredLog } from './log.js';
import { peersMain, splitConfig } from './replication/cli.js';
import { startServer } from './server.js';
import { StartupError } from './startup-error.js';
import { TermsError } from './terms/terms.js';
import { VERSION } from './version.js';
import { errorMessage } from './util/error-message.js';

interface CommandLine {
  configPath?: string;
  /** `--generate-config`: write a new config file at the config path and exit */
  generateConfig?: boolean;
  /** `--inspect[=PORT]`: Stately inspector relay on loopback (default port 4780) */
  inspectPort?: number;
}

const DEFAULT_INSPECT_PORT = 4780;

/** `--help`: every command, option and environment variable, one line each. */
const HELP = `usage: sydent-ts [OPTIONS] [COMMAND]
Runs the identity server in the current directory unless a command is given.

Commands:
  peers add NAME --pubkey KEY [--url URL] [--port N]   add or update a replication peer (sydent-ts peers --help)
  peers list [--json]                                  list the replication peers
  peers remove NAME                                    remove a replication peer
  rotate-pepper                                        a new lookup pepper; every association re-hashed
  migrate-db --to postgresql://… [--from sqlite:PATH]  copy the database into an empty PostgreSQL database
  migrate-db --to sqlite:PATH [--from postgresql://…]  copy a PostgreSQL database back into a new SQLite file

Options:
  -c, --config PATH    the configuration file; it must exist (default: $SYDENT_CONF, else ./sydent.conf, written on first start)
  --generate-config    write a new configuration at the config path (every default, a fresh signing key) and exit
  --inspect[=PORT]     relay every actor's events to Stately's inspector on 127.0.0.1:PORT (default ${DEFAULT_INSPECT_PORT})
  -V, --version        print the version and exit
  -h, --help           print this help and exit

Environment:
  SYDENT_CONF          the configuration file when --config is not given
  SYDENT_DB_PATH       the database file where the configuration does not set [db] db.file
  SYDENT_DB_URL        the PostgreSQL database where [db] db.url is not set (db.engine = postgresql; also
                       what migrate-db --to sqlite:PATH copies when --from is not given)
  SYDENT_PID_FILE      the pid file where the configuration does not set [general] pidfile.path
  SYDENT_SERVER_NAME   the server name where the configuration does not set [general] server.name
`;

function parseArgs(argv: string[]): CommandLine {
  const out: CommandLine = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--config' || arg === '-c') {
      const value = argv[++i];
      if (!value) usage(`${arg} needs a path`);
      out.configPath = value;
    } else if (arg.startsWith('--config=')) {
      out.configPath = arg.slice('--config='.length);
      if (!out.configPath) usage('--config needs a path');
    } else if (arg === '--generate-config') {
      out.generateConfig = true;
    } else if (arg === '--inspect' || arg.startsWith('--inspect=')) {
      const value = arg.includes('=') ? Number(arg.slice('--inspect='.length)) : DEFAULT_INSPECT_PORT;
      if (!Number.isInteger(value) || value < 0 || value > 65535) usage(`${arg}: not a port number`);
      out.inspectPort = value;
    } else if (arg === '--version' || arg === '-V') {
      process.stdout.write(`sydent-ts ${VERSION}\n`);
      process.exit(0);
    } else if (arg === '--help' || arg === '-h') {
      process.stdout.write(HELP);
      process.exit(0);
    } else {
      usage(`unknown argument: ${arg}`);
    }
  }
  return out;
}

function usage(problem: string): never {
  process.stderr.write(`sydent-ts: ${problem} (sydent-ts --help lists what it takes)\n`);
  process.exit(2);
}

/** One line on stderr and exit 1: for problems an operator fixes, where a stack trace only hides the line. */
function fail(message: string): never {
  process.stderr.write(`${message}\n`);
  process.exit(1);
}

/** The command a command line names: its first word other than `--config PATH` (none: run the server). */
function commandOf(argv: string[]): string | undefined {
  try {
    return splitConfig(argv).rest[0];
  } catch {
    return undefined;
  }
}

async function main(): Promise<void> {
  const command = commandOf(process.argv.slice(2));
  // `sydent-ts [--config PATH] peers add|list|remove …`: replication peers, then exit
  if (command === 'peers') {
    process.exitCode = await peersMain(process.argv.slice(2), {
      stdout: (text) => process.stdout.write(text),
      stderr: (text) => process.stderr.write(text),
      env: process.env,
      cwd: process.cwd(),
    });
    return;
  }
  // The commands below are loaded only when asked for: the server never needs them (migrate-db brings the
  // PostgreSQL client).
  if (command === 'rotate-pepper') {
    const { rotatePepperMain } = await import('./store/rotate-pepper.js');
    process.exitCode = await rotatePepperMain(process.argv.slice(2), {
      stdout: (text) => process.stdout.write(text),
      stderr: (text) => process.stderr.write(text),
      env: process.env,
      cwd: process.cwd(),
    });
    return;
  }
  if (command === 'migrate-db') {
    const { migrateDbMain } = await import('./store/migrate-db/cli.js');
    process.exitCode = await migrateDbMain(process.argv.slice(2), {
      stdout: (text) => process.stdout.write(text),
      stderr: (text) => process.stderr.write(text),
      env: process.env,
      cwd: process.cwd(),
      tty: process.stderr.isTTY === true,
    });
    return;
  }
  const args = parseArgs(process.argv.slice(2));
  const where = { configPath: args.configPath, env: process.env, cwd: process.cwd() };
  let loaded;
  try {
    if (args.generateConfig) {
      process.stdout.write(`sydent-ts: wrote ${generateConfig(where)} with every default and a fresh signing key\n`);
      return;
    }
    // A path given on the command line that is not there is a typo: starting would write a new signing key.
    loaded = loadConfig({ ...where, ifMissing: args.configPath ? 'error' : 'generate' });
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }
  const { config } = loaded;
  let logging;
  try {
    logging = await openConfiguredLog(config.general);
  } catch (error) {
    if (error instanceof LogFileError) fail(`sydent-ts: ${error.message}`);
    throw error;
  }
  const { log } = logging;
  // logrotate moved the file: write to a new one under the configured name. Handled even without a file, so that
  // `systemctl reload` never stops the server.
  process.on('SIGHUP', () => {
    log.info(logging.reopen() ? 'log file reopened (SIGHUP)' : 'SIGHUP: logging to stderr, no file to reopen');
  });
  for (const warning of loaded.warnings) log.warn(warning);
  if (loaded.generated) log.info({ path: loaded.path }, 'wrote a new configuration with a fresh signing key');

  let server;
  try {
    server = await startServer({ config, log, pidFile: true, inspectPort: args.inspectPort });
  } catch (error) {
    // Problems an operator fixes (terms file, a port in use, another instance) get one line, not a stack trace.
    if (error instanceof TermsError || error instanceof StartupError) fail(`sydent-ts: ${error.message}`);
    throw error;
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    // SIGTERM (a service manager, a deploy) drains for `drain_seconds`; Ctrl-C stops without that window. Either way
    // requests under way get `shutdown_timeout_seconds`, and the stop ends within a second of that deadline.
    const drain = signal === 'SIGTERM';
    const deadlineMs = (drain ? config.http.drainSeconds * 1000 : 0) + config.http.shutdownTimeoutMs;
    // Only a bug gets here: every step of the stop is cut short at the deadline.
    setTimeout(() => {
      log.error({ seconds: deadlineMs / 1000 }, 'shutdown did not end within a second of its deadline; exiting');
      void logging.close().finally(() => process.exit(1));
    }, deadlineMs + 1_000).unref();
    server.close({ drain }).then(
      () => logging.close().finally(() => process.exit(0)),
      (error: unknown) => {
        log.error({ err: error }, 'shutdown failed');
        void logging.close().finally(() => process.exit(1));
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((error: unknown) => {
  process.stderr.write(`sydent-ts: ${errorMessage(error)}\n`);
  process.exit(1);
});
