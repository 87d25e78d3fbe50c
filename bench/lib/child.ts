import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cpuSeconds } from './proc-cpu.js';

/** The project root (bench/lib/../..). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** tsx's loader by absolute URL: children run in temp directories where a bare `tsx` would not resolve. */
export const TSX_LOADER = pathToFileURL(path.join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href;

const MAX_KEPT_STDERR = 64 * 1024;

export interface TsProcess {
  child: ChildProcess;
  /** what the process wrote to stderr (the last 64 KiB) */
  stderr: () => string;
  /** `performance.now()` when the process was spawned */
  spawnedAt: number;
  /**
   * `performance.now()` when the stderr chunk holding the first occurrence of `text` arrived (within the first
   * 64 KiB the process wrote), or null: when a start-up line was logged, to within the pipe's delay.
   */
  seenAt(text: string): number | null;
  /**
   * The process's CPU seconds (user + system, all its threads) read when that chunk arrived, or null: what it had
   * done by then, whatever the machine's load made of the wall-clock time.
   */
  cpuWhenSeen(text: string): number | null;
  /** resolves with the exit code, or the signal name */
  exited: Promise<number | string>;
  /** SIGTERM, then wait for the exit; SIGKILL after `graceMs`. Safe to call twice. */
  stop(graceMs?: number): Promise<number | string>;
}

/** Runs a TypeScript file in its own Node process through tsx (or, with `tsx: false`, a JavaScript file as is). */
export function spawnTs(
  script: string,
  args: string[],
  opts: { cwd: string; env?: NodeJS.ProcessEnv; tsx?: boolean },
): TsProcess {
  const env: NodeJS.ProcessEnv = {};
  // SYDENT_* variables are config defaults: keep the bench independent of the caller's environment.
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('SYDENT_')) env[k] = v;
  const loader = opts.tsx === false ? [] : ['--import', TSX_LOADER];
  const child = spawn(process.execPath, [...loader, script, ...args], {
    cwd: opts.cwd,
    env: { ...env, ...opts.env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const spawnedAt = performance.now();
  let err = '';
  // the first 64 KiB again, with each chunk's arrival time and where it ends
  let early = '';
  const arrivals: Array<{ at: number; end: number; cpu: number | null }> = [];
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (early.length < MAX_KEPT_STDERR) {
      early += d;
      arrivals.push({ at: performance.now(), end: early.length, cpu: child.pid ? cpuSeconds(child.pid) : null });
    }
    err += d;
    if (err.length > MAX_KEPT_STDERR) err = err.slice(-MAX_KEPT_STDERR);
  });
  let exitValue: number | string | undefined;
  const exited = new Promise<number | string>((resolve) =>
    child.on('exit', (code, signal) => {
      exitValue = code ?? signal ?? 'unknown';
      resolve(exitValue);
    }),
  );
  let stopping: Promise<number | string> | null = null;
  const stop = (graceMs = 10_000): Promise<number | string> =>
    (stopping ??= (async () => {
      if (exitValue !== undefined) return exitValue;
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const killed = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), graceMs)));
      const first = await Promise.race([exited, killed]);
      clearTimeout(timer);
      if (first !== 'timeout') return first;
      child.kill('SIGKILL');
      return exited;
    })());
  const arrivalOf = (text: string) => {
    const i = early.indexOf(text);
    return i === -1 ? undefined : arrivals.find((a) => a.end >= i + text.length);
  };
  const seenAt = (text: string): number | null => arrivalOf(text)?.at ?? null;
  const cpuWhenSeen = (text: string): number | null => arrivalOf(text)?.cpu ?? null;
  return { child, stderr: () => err, spawnedAt, seenAt, cpuWhenSeen, exited, stop };
}

/** One GET on loopback: the status code, or null when nothing answered (yet). */
function probe(url: string): Promise<number | null> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 1000, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? null);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

export interface ReadyOptions {
  /** a line the process writes to stderr once it listens */
  marker: string;
  /**
   * a URL that answers 200 once the process listens: the fallback when the marker is not logged (sydent-ts logs
   * `sydent-ts started` at INFO, which `log.level = WARNING` hides)
   */
  probeUrl?: string;
  timeoutMs?: number;
}

/** Waits until the process is ready (marker in stderr, or the probe URL answers 200); fails if it exits first. */
export async function waitReady(p: TsProcess, opts: ReadyOptions): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  let exitedWith: number | string | undefined;
  void p.exited.then((c) => (exitedWith = c));
  let lastProbe = 0;
  while (Date.now() < deadline) {
    if (p.stderr().includes(opts.marker)) return;
    if (exitedWith !== undefined) throw new Error(`process exited (${exitedWith}) before it was ready:\n${p.stderr()}`);
    if (opts.probeUrl && Date.now() - lastProbe >= 100) {
      lastProbe = Date.now();
      if ((await probe(opts.probeUrl)) === 200) return;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  await p.stop(2000);
  throw new Error(`process was not ready in ${opts.timeoutMs ?? 20_000} ms:\n${p.stderr()}`);
}
