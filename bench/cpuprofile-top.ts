/**
 * Where a profiled server's time went: self time by function (and optionally inclusive time) from a .cpuprofile
 * written under `BENCH_CPU_PROF=<dir>` (see bench/lib/associations-db.ts).
 *
 *   node --import tsx bench/cpuprofile-top.ts <file.cpuprofile> [--top <n>] [--inclusive <n>]
 *        [--window <s>] [--skip-end <s>] [--requests <n>]
 *
 * A profile covers the process from its start to its exit; `--window` keeps only the `<s>` seconds before the last
 * `--skip-end` seconds (default: the whole profile), i.e. the load, without start-up and shutdown. `--requests`
 * (answers in that window, e.g. req/s × seconds) adds µs per request to every line.
 *
 * Reading it: V8's sampler is wall-clock. A sample is taken when the JS thread next runs, so time the thread spent
 * descheduled lands on the frame it was in. On a machine whose cores are shared with the load generator (and other
 * work), a large `writev` share is mostly the server waiting for a CPU after its write woke autocannon, not work in
 * the syscall: count writes with `strace -f -c -p <pid>` and CPU with `perf` or /proc/<pid>/stat before blaming it.
 */
import fs from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

function usage(problem?: string): never {
  if (problem) process.stderr.write(`cpuprofile-top: ${problem}\n`);
  process.stderr.write(
    'usage: node --import tsx bench/cpuprofile-top.ts <file.cpuprofile> [--top <n>] [--inclusive <n>] [--window <s>] [--skip-end <s>] [--requests <n>]\n',
  );
  process.exit(2);
}

const args = process.argv.slice(2);
let file: string | undefined;
const opts = { top: 40, inclusive: 0, windowS: Infinity, skipEndS: 0, requests: 0 };
for (let i = 0; i < args.length; i++) {
  const arg = args[i]!;
  const num = () => {
    const n = Number(args[++i]);
    if (!Number.isFinite(n) || n < 0) usage(`${arg} needs a number`);
    return n;
  };
  if (arg === '--top') opts.top = num();
  else if (arg === '--inclusive') opts.inclusive = num();
  else if (arg === '--window') opts.windowS = num();
  else if (arg === '--skip-end') opts.skipEndS = num();
  else if (arg === '--requests') opts.requests = num();
  else if (!arg.startsWith('--') && !file) file = arg;
  else usage(`unknown argument ${arg}`);
}
if (!file) usage();

const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

const root = process.cwd().replace(/\/?$/, '/');
const label = (n: ProfileNode): string => {
  const f = n.callFrame;
  const where = f.url
    .replace(/^file:\/\//, '')
    .replace(root, '')
    .replace(/^.*node_modules\//, 'nm/');
  return where ? `${f.functionName || '(anonymous)'} ${where}:${f.lineNumber + 1}` : f.functionName || '(anonymous)';
};

// Sample i is taken at startTime + Σ timeDeltas[0..i] and stands for the time until the next sample.
const end = profile.endTime - opts.skipEndS * 1e6;
const start = end - opts.windowS * 1e6;
const selfUs = new Map<number, number>();
let t = profile.startTime;
for (let i = 0; i < profile.samples.length; i++) {
  t += profile.timeDeltas[i] ?? 0;
  if (t < start || t > end) continue;
  const id = profile.samples[i]!;
  selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i + 1] ?? 0));
}

const self = new Map<string, number>();
const inclusive = new Map<string, number>();
let total = 0;
let idle = 0;
for (const [id, us] of selfUs) {
  const node = byId.get(id)!;
  total += us;
  if (node.callFrame.functionName === '(idle)') idle += us;
  const key = label(node);
  self.set(key, (self.get(key) ?? 0) + us);
  const seen = new Set<string>();
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const k = label(byId.get(cur)!);
    if (seen.has(k)) continue;
    seen.add(k);
    inclusive.set(k, (inclusive.get(k) ?? 0) + us);
  }
}

const busy = total - idle;
const perRequest = (us: number) => (opts.requests ? `  ${(us / opts.requests).toFixed(2).padStart(7)} µs/req` : '');
const line = (us: number, key: string) => `${((100 * us) / busy).toFixed(1).padStart(5)}%${perRequest(us)}  ${key}`;

process.stdout.write(
  `${file}: ${(total / 1e6).toFixed(2)} s sampled, ${(idle / 1e6).toFixed(2)} s idle, ${(busy / 1e6).toFixed(2)} s busy; % of busy\n`,
);
process.stdout.write('--- self\n');
for (const [key, us] of [...self]
  .filter(([k]) => k !== '(idle)')
  .sort((a, b) => b[1] - a[1])
  .slice(0, opts.top)) {
  process.stdout.write(`${line(us, key)}\n`);
}
if (opts.inclusive > 0) {
  process.stdout.write('--- inclusive\n');
  for (const [key, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, opts.inclusive)) {
    process.stdout.write(`${line(us, key)}\n`);
  }
}
