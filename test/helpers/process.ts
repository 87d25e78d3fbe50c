import { spawn, type ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MAIN = path.join(ROOT, 'src/main.ts');
// By absolute URL: the server runs in a temp directory where `tsx` would not resolve.
const TSX = pathToFileURL(path.join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href;

export interface ServerProcess {
  child: ChildProcess;
  stderr(): string;
  stdout(): string;
  /** resolves with the exit code (or signal name) */
  exited: Promise<number | string>;
}

/**
 * Starts `sydent-ts` as its own process, the way an operator runs it: from TypeScript sources via tsx, or, with
 * `bin`, an installed package's command.
 */
export function spawnServer(opts: {
  cwd: string;
  env?: Record<string, string>;
  args?: string[];
  bin?: string;
  /** the process's open-file limit, soft and hard (`ulimit -n`), as a service manager or container may set it */
  fileLimit?: number;
}): ServerProcess {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('SYDENT_')) env[k] = v;
  const program = opts.bin ? [opts.bin] : ['--import', TSX, MAIN];
  const command = [process.execPath, ...program, ...(opts.args ?? [])];
  // The shell sets the limit, then becomes the server (exec): the child's pid is the server's.
  const [file, args] =
    opts.fileLimit === undefined
      ? [command[0]!, command.slice(1)]
      : ['/bin/sh', ['-c', 'ulimit -n "$0" && exec "$@"', String(opts.fileLimit), ...command]];
  const child = spawn(file, args, {
    cwd: opts.cwd,
    env: { ...env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  let out = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  const exited = new Promise<number | string>((resolve) =>
    child.on('close', (code, signal) => resolve(code ?? signal ?? 'unknown')),
  );
  return { child, stderr: () => err, stdout: () => out, exited };
}

/** The JSON lines of the process's log (stderr) whose message is `msg`. */
export function logLines(p: ServerProcess, msg: string): Array<Record<string, unknown>> {
  return p
    .stderr()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l['msg'] === msg);
}

/** Waits until the process logs that it is listening; fails if it exits first. */
export async function waitForStart(p: ServerProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitedWith: number | string | undefined;
  void p.exited.then((c) => (exitedWith = c));
  while (Date.now() < deadline) {
    if (p.stderr().includes('sydent-ts started')) return;
    if (exitedWith !== undefined) throw new Error(`server exited (${exitedWith}) before starting:\n${p.stderr()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  p.child.kill('SIGKILL');
  throw new Error(`server did not start in ${timeoutMs} ms:\n${p.stderr()}`);
}

/**
 * Ports handed out by `freePort` lie below the kernel's ephemeral range (32768 and up), so no `listen(0)` and no
 * outgoing connection in another test can take one between its choice and its use. Each vitest worker draws from
 * a block of its own, so two files running at once never draw the same port.
 */
const FIRST_PORT = 10_000;
const BLOCK = 250;
const BLOCKS = Math.floor((32_768 - FIRST_PORT) / BLOCK);
let nextInBlock = -1;

/** A loopback port free right now that no other test worker will be given. */
export async function freePort(): Promise<number> {
  const worker = Number(process.env.VITEST_POOL_ID ?? 0);
  const base = FIRST_PORT + (worker % BLOCKS) * BLOCK;
  // Files of one worker run one after another; a random start keeps a new file off the ports a previous one may
  // still be closing.
  if (nextInBlock < 0) nextInBlock = randomInt(BLOCK);
  for (let tried = 0; tried < BLOCK; tried++) {
    const port = base + (nextInBlock++ % BLOCK);
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port in ${base}-${base + BLOCK - 1}`);
}

async function canListen(port: number): Promise<boolean> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/**
 * The sydent.conf of a spawned server in `dir`: its database and pid file there, its client listener on loopback
 * `port`, and `email` as its `[email]` section. Returns where the config and the database are.
 */
export function writeServerConf(
  dir: string,
  port: number,
  email: Record<string, string>,
): { confPath: string; dbFile: string } {
  const confPath = path.join(dir, 'sydent.conf');
  const dbFile = path.join(dir, 'sydent.db');
  fs.writeFileSync(
    confPath,
    [
      '[general]',
      'server.name = is.example.test',
      `pidfile.path = ${path.join(dir, 'sydent.pid')}`,
      '[db]',
      `db.file = ${dbFile}`,
      '[http]',
      'clientapi.http.bind_address = 127.0.0.1',
      `clientapi.http.port = ${port}`,
      'client_http_base = https://is.example.test',
      '[email]',
      ...Object.entries(email).map(([k, v]) => `${k} = ${v}`),
      '',
    ].join('\n'),
  );
  return { confPath, dbFile };
}
