import { ConfigError, loadConfig } from './config/index.js';
import { createLogger } from './log.js';
import { isPeersCommand, peersMain } from './replication/cli.js';
import { startServer } from './server.js';
import { isRotatePepperCommand, rotatePepperMain } from './store/rotate-pepper.js';
import { TermsError } from './terms/terms.js';

interface CommandLine {
  configPath?: string;
  /** `--inspect[=PORT]`: Stately inspector relay on loopback (default port 4780) */
  inspectPort?: number;
}

const DEFAULT_INSPECT_PORT = 4780;

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
    } else if (arg === '--inspect' || arg.startsWith('--inspect=')) {
      const value = arg.includes('=') ? Number(arg.slice('--inspect='.length)) : DEFAULT_INSPECT_PORT;
      if (!Number.isInteger(value) || value < 0 || value > 65535) usage(`${arg}: not a port number`);
      out.inspectPort = value;
    } else if (arg === '--help' || arg === '-h') {
      usage();
    } else {
      usage(`unknown argument: ${arg}`);
    }
  }
  return out;
}

function usage(problem?: string): never {
  if (problem) process.stderr.write(`sydent-ts: ${problem}\n`);
  process.stderr.write('usage: sydent-ts [--config PATH] [--inspect[=PORT]]\n       sydent-ts [--config PATH] peers add|list|remove … (sydent-ts peers --help)\n       sydent-ts [--config PATH] rotate-pepper\n');
  process.exit(problem ? 2 : 0);
}

async function main(): Promise<void> {
  // `sydent-ts [--config PATH] peers add|list|remove …`: replication peers, then exit
  if (isPeersCommand(process.argv.slice(2))) {
    process.exitCode = peersMain(process.argv.slice(2), {
      stdout: (text) => process.stdout.write(text),
      stderr: (text) => process.stderr.write(text),
      env: process.env,
      cwd: process.cwd(),
    });
    return;
  }
  if (isRotatePepperCommand(process.argv.slice(2))) {
    process.exitCode = rotatePepperMain(process.argv.slice(2), {
      stdout: (text) => process.stdout.write(text),
      stderr: (text) => process.stderr.write(text),
      env: process.env,
      cwd: process.cwd(),
    });
    return;
  }
  const args = parseArgs(process.argv.slice(2));
  let loaded;
  try {
    loaded = loadConfig({ configPath: args.configPath, env: process.env, cwd: process.cwd() });
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
  const { config } = loaded;
  const log = createLogger({ level: config.general.logLevel, path: config.general.logPath });
  for (const warning of loaded.warnings) log.warn(warning);
  if (loaded.generated) log.info({ path: loaded.path }, 'wrote a new configuration with a fresh signing key');

  let server;
  try {
    server = await startServer({ config, log, pidFile: true, inspectPort: args.inspectPort });
  } catch (error) {
    // Problems an operator fixes (terms file, a port in use) get one line, not a stack trace.
    if (error instanceof TermsError || (error as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      process.stderr.write(`sydent-ts: ${(error as Error).message}\n`);
      process.exit(1);
    }
    throw error;
  }

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    server.close().then(
      () => {
        log.flush();
        process.exit(0);
      },
      (error: unknown) => {
        log.error({ err: error }, 'shutdown failed');
        log.flush();
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((error: unknown) => {
  process.stderr.write(`sydent-ts: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
