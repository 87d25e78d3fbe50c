/**
 * The benchmark runner: `npm run bench [-- --only <name>[,<name>…]] [--duration <s>] [--warmup <s>]
 * [--connections <n>] [--sessions <n>] [--engine sqlite|postgresql|sqlite,postgresql] [--out <file>]`.
 *
 * Runs the baseline (bare fastify) first, then every other scenario of bench/scenarios/*.ts in name order, each
 * server in its own process and autocannon in this one, and writes bench/RESULTS.md (or --out) and a table on
 * stdout. With several engines, each scenario that runs on them runs once per engine, one after the other (so that
 * their figures come from the same minutes); PostgreSQL is a throwaway server started once for the run. Speed is
 * recorded here, never asserted in tests.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  createContext,
  PAIRED_BASELINES,
  PAIRED_ROUNDS,
  PAIRED_SLICE_S,
  type Scenario,
  type ScenarioResult,
} from './lib/scenario.js';
import { benchPostgres, ENGINES, stopBenchPostgres, type Engine } from './lib/postgres.js';

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const SCENARIO_DIR = path.join(BENCH_DIR, 'scenarios');
const BASELINE = 'baseline';
/** a scenario's run beyond warm-up + duration: servers starting, databases prepared, mails settling */
const SCENARIO_SLACK_S = 120;

interface Options {
  only: string[] | null;
  durationS: number;
  warmupS: number;
  connections: number;
  /** requestTokens of the memory scenario; null: its default */
  sessions: number | null;
  /** the store engines to run the scenarios on, in this order */
  engines: Engine[];
  out: string;
}

function usage(problem?: string): never {
  if (problem) process.stderr.write(`bench: ${problem}\n`);
  process.stderr.write(
    'usage: npm run bench -- [--only <name>[,<name>…]] [--duration <s>] [--warmup <s>] [--connections <n>] [--sessions <n>] [--engine sqlite|postgresql|sqlite,postgresql] [--out <file>]\n',
  );
  process.exit(problem ? 2 : 0);
}

function parseArgs(argv: string[]): Options {
  const opts: Options = {
    only: null,
    durationS: 10,
    warmupS: 2,
    connections: 10,
    sessions: null,
    engines: ['sqlite'],
    out: path.join(BENCH_DIR, 'RESULTS.md'),
  };
  const number = (flag: string, value: string | undefined, min: number): number => {
    const n = Number(value);
    if (value === undefined || !Number.isFinite(n) || n < min) usage(`${flag} needs a number ≥ ${min}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag, inline] =
      arg.startsWith('--') && arg.includes('=')
        ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
        : [arg, undefined];
    const value = () => inline ?? argv[++i];
    switch (flag) {
      case '--only': {
        const v = value();
        if (!v) usage('--only needs a scenario name');
        opts.only = [
          ...(opts.only ?? []),
          ...v
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean),
        ];
        break;
      }
      case '--duration':
        opts.durationS = number(flag, value(), 1);
        break;
      case '--warmup':
        opts.warmupS = number(flag, value(), 0);
        break;
      case '--connections':
        opts.connections = Math.floor(number(flag, value(), 1));
        break;
      case '--sessions':
        opts.sessions = Math.floor(number(flag, value(), 1));
        break;
      case '--engine': {
        const v = (value() ?? '').split(',').map((e) => e.trim().toLowerCase());
        const engines = ENGINES.filter((e) => v.includes(e));
        if (!v[0] || engines.length !== new Set(v).size)
          usage('--engine needs sqlite, postgresql or both (comma-separated)');
        opts.engines = v as Engine[];
        break;
      }
      case '--out': {
        const v = value();
        if (!v) usage('--out needs a file');
        opts.out = path.resolve(v);
        break;
      }
      case '--help':
      case '-h':
        usage();
        break;
      default:
        usage(`unknown argument: ${arg}`);
    }
  }
  return opts;
}

function isScenario(x: unknown): x is Scenario {
  const s = x as Partial<Scenario> | null;
  return !!s && typeof s.name === 'string' && typeof s.description === 'string' && typeof s.run === 'function';
}

/** Every scenario file, the baseline first, then by file name (without `.ts`, so `a` comes before `a-b`). */
async function loadScenarios(): Promise<Scenario[]> {
  const files = fs
    .readdirSync(SCENARIO_DIR)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => f.slice(0, -3))
    .sort();
  const scenarios: Scenario[] = [];
  for (const base of files) {
    const mod = (await import(pathToFileURL(path.join(SCENARIO_DIR, `${base}.ts`)).href)) as Record<string, unknown>;
    const scenario = mod.default ?? mod.scenario;
    if (!isScenario(scenario))
      throw new Error(`bench/scenarios/${base}.ts exports no { name, description, run } (default export)`);
    if (scenarios.some((s) => s.name === scenario.name)) throw new Error(`two scenarios are named ${scenario.name}`);
    scenarios.push(scenario);
  }
  const baseline = scenarios.find((s) => s.name === BASELINE);
  if (!baseline) throw new Error(`bench/scenarios has no '${BASELINE}' scenario`);
  return [baseline, ...scenarios.filter((s) => s !== baseline)];
}

interface Outcome {
  scenario: Scenario;
  /** the scenario's name, with the engine when it is not SQLite */
  label: string;
  result?: ScenarioResult;
  error?: string;
  wallS: number;
}

async function runOne(scenario: Scenario, engine: Engine, opts: Options): Promise<Outcome> {
  const started = Date.now();
  const label = engine === 'sqlite' ? scenario.name : `${scenario.name} (${engine})`;
  const { ctx, stderr, dispose } = createContext({
    name: label,
    engine,
    durationS: opts.durationS,
    warmupS: opts.warmupS,
    connections: opts.connections,
    sessions: opts.sessions,
  });
  const limitS =
    scenario.timeLimitS?.({ warmupS: opts.warmupS, durationS: opts.durationS, sessions: opts.sessions }) ??
    opts.warmupS + opts.durationS + SCENARIO_SLACK_S;
  let timer: NodeJS.Timeout | undefined;
  const overrun = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`did not finish in ${limitS} s`)), limitS * 1000);
  });
  try {
    const result = await Promise.race([scenario.run(ctx), overrun]);
    // sydent-ts runs at log.level WARNING: anything it wrote is worth a look (below WARNING only where a scenario
    // asked for it, e.g. start-up's INFO line)
    const notes = [...(result.notes ?? [])];
    for (const { what, text } of stderr()) {
      const lines = text
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !/started/.test(l) && !belowWarning(l));
      if (lines.length)
        notes.push(`${what} wrote ${lines.length} line(s) to stderr, the first: ${lines[0]!.slice(0, 300)}`);
    }
    result.notes = notes;
    return { scenario, label, result, wallS: (Date.now() - started) / 1000 };
  } catch (error) {
    return {
      scenario,
      label,
      error: error instanceof Error ? error.message : String(error),
      wallS: (Date.now() - started) / 1000,
    };
  } finally {
    clearTimeout(timer);
    await dispose();
  }
}

/** A pino line (JSON) below WARNING (level 40). */
function belowWarning(line: string): boolean {
  if (!line.startsWith('{')) return false;
  try {
    const level = (JSON.parse(line) as { level?: unknown }).level;
    return typeof level === 'number' && level < 40;
  } catch {
    return false;
  }
}

// ---- formatting ----

const COLUMNS = [
  'scenario',
  'req/s',
  'p50 ms',
  'p90 ms',
  'p99 ms',
  '2xx',
  'non-2xx',
  'errors',
  'vs baseline',
  'paired',
  'vs twin',
] as const;

/** autocannon's latency histogram counts whole milliseconds: 0 means under 1 ms */
const ms = (v: number): string => (v === 0 ? '<1' : String(v));

function row(o: Outcome, baselineRps: number | null): string[] {
  if (!o.result) return [o.label, 'failed', '', '', '', '', '', '', '', '', ''];
  const twin = o.result.twin ? o.result.twin.ratio.toFixed(3) : '';
  const s = o.result.summary;
  if (!s)
    return [o.label, '', '', '', '', '', '', '', '', o.result.paired ? o.result.paired.ratio.toFixed(3) : '', twin];
  const ratio = baselineRps ? (s.rps / baselineRps).toFixed(3) : 'n/a';
  return [
    o.label,
    s.rps.toFixed(1),
    ms(s.p50),
    ms(s.p90),
    ms(s.p99),
    String(s.ok2xx),
    String(s.non2xx),
    s.timeouts ? `${s.errors} (${s.timeouts} timeouts)` : String(s.errors),
    ratio,
    o.result.paired ? o.result.paired.ratio.toFixed(3) : '',
    twin,
  ];
}

function textTable(rows: string[][]): string {
  const all = [[...COLUMNS], ...rows];
  const widths = COLUMNS.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(all[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function markdownTable(rows: string[][]): string {
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  return [
    `| ${COLUMNS.join(' | ')} |`,
    `|${COLUMNS.map((_, i) => (i === 0 ? ' --- ' : ' ---: ')).join('|')}|`,
    ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`),
  ].join('\n');
}

function machine(): { cpu: string; cores: number; node: string; os: string } {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown CPU',
    cores: os.cpus().length,
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
  };
}

/** The commit measured, and whether the checkout had changes. */
function codeVersion(): string {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: BENCH_DIR, encoding: 'utf8' }).trim();
  try {
    const changed = git('status', '--porcelain', '--untracked-files=no') !== '';
    return `${git('log', '-1', '--format=%h %s')}${changed ? ' (with uncommitted changes)' : ''}`;
  } catch {
    return 'not a git checkout';
  }
}

/**
 * The work log's first line in RESULTS.md: what follows it is kept as it is when a run rewrites the file (the
 * sessions' sections, written by hand after their runs).
 */
const WORK_LOG_MARKER = '<!-- work log: npm run bench rewrites what is above this line and keeps the rest -->';

/** The work log of the file about to be rewritten (from its marker on), or nothing. */
function keptWorkLog(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
  const at = text.indexOf(WORK_LOG_MARKER);
  return at === -1 ? '' : `\n${text.slice(at)}`;
}

function markdown(outcomes: Outcome[], rows: string[][], opts: Options, startedAt: Date): string {
  const m = machine();
  const out: string[] = [
    '# Benchmark results',
    '',
    'Written by `npm run bench` (bench/run.ts); see bench/README.md. Figures from one run on one',
    'machine: compare ratios to the baseline rather than absolute numbers across machines. The work log that',
    'follows the run (how each figure came about, the runs before this one) is kept by every run.',
    '',
    `- Date: ${startedAt.toISOString()} to ${new Date().toISOString()}`,
    `- Code: ${codeVersion()}`,
    `- Load average (1 min, on ${os.cpus().length} cores) at the start ${loadAtStart.toFixed(2)}, at the end ${os.loadavg()[0]!.toFixed(2)}` +
      (Math.max(loadAtStart, os.loadavg()[0]!) > 1.5
        ? ': other work shared the machine, figures are lower than on a quiet one'
        : ''),
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.os}`,
    `- Node: ${m.node}`,
    `- Run: ${opts.durationS} s measured per scenario after ${opts.warmupS} s of warm-up (not counted), ${opts.connections} connections, pipelining 1` +
      (opts.only ? `; only ${opts.only.join(', ')} (and the baseline)` : ''),
    '- Servers under test in their own process; autocannon in the bench process; loopback only.',
    `- Store engines: ${opts.engines.join(', ')}` +
      (pgVersion
        ? ` (PostgreSQL ${pgVersion}: a throwaway server on this machine, fsync and synchronous_commit off, the ` +
          '1,000,000 associations loaded by `migrate-db` from the SQLite file once, copied per scenario)'
        : ''),
    '',
    markdownTable(rows),
    '',
    "req/s: mean of autocannon's per-second samples (all answers). Latency percentiles in ms (autocannon's",
    'histogram has 1 ms resolution). errors: socket errors and timeouts. vs baseline: req/s over the bare-fastify',
    "baseline's req/s in the same run. paired: for the scenarios with a goal against the baseline, the same load",
    `again in ${PAIRED_ROUNDS} rounds of ${PAIRED_SLICE_S} s, each round one slice of it and one of each of ${PAIRED_BASELINES} bare fastify processes`,
    "(`GET /`), in a new order every round; mean req/s over the baseline's mean. This machine drifts by up to ±20 %",
    'between minutes, and identical processes differ by up to 40 % depending on where it placed them, so the figure',
    'measured in the same minutes against several baseline processes is the one to compare; its rounds are listed',
    "under the scenario, with each side's server CPU time per answer in those slices (from /proc): under this load",
    'the servers are CPU-bound, so the req/s ratio follows the CPU ratio, and the CPU figures vary less between minutes.',
    'vs twin: for the write scenarios, 2xx/s over the 2xx/s of its bare twin (bench/lib/twin-server.ts: a bare fastify',
    'route doing the same essential work on a copy of the same database), measured in alternating slices in the same',
    'minutes (listed under the scenario).',
    '',
    ...goalTable(outcomes),
  ];
  for (const o of outcomes) {
    out.push(`## ${o.label}`, '', o.scenario.description, '');
    if (o.error) {
      out.push(`**Failed**: ${o.error}`, '');
      continue;
    }
    const r = o.result!;
    const s = r.summary;
    if (s) {
      out.push(
        `- measured: ${s.durationS} s, ${s.total} answers (${s.sent} requests sent), status codes: ${
          Object.entries(s.statusCodes)
            .map(([code, n]) => `${code} × ${n}`)
            .join(', ') || 'none'
        }`,
      );
    }
    if (r.paired) {
      const p = r.paired;
      const perRound = p.scenarioRps.map((v, i) => `${v.toFixed(0)}/${p.baselineRps[i]!.toFixed(0)}`).join(', ');
      out.push(
        `- paired with the baseline (bare fastify answering ${p.baselineLabel}): ${p.ratio.toFixed(3)} (median of the rounds ${p.medianRatio.toFixed(3)}); req/s per ` +
          `round, this scenario/baseline (mean of ${p.baselineProcesses} bare fastify processes): ${perRound}; each bare ` +
          `fastify process's mean: ${p.baselineRpsByProcess.map((v) => v.toFixed(0)).join(', ')}` +
          (p.scenarioProcesses > 1
            ? `; the scenario on ${p.scenarioProcesses} sydent-ts processes (per round their mean), each one's mean: ` +
              p.scenarioRpsByProcess.map((v) => v.toFixed(0)).join(', ')
            : '') +
          (p.cpuPerAnswerUs
            ? `; server CPU per answer (user + system, all slices): this scenario ${p.cpuPerAnswerUs.scenario.toFixed(1)} µs, ` +
              `bare fastify ${p.cpuPerAnswerUs.baseline.toFixed(1)} µs, their ratio (bare/scenario) ` +
              (p.cpuPerAnswerUs.baseline / p.cpuPerAnswerUs.scenario).toFixed(3)
            : '') +
          (p.cpuBusy
            ? `; share of a core they used: this scenario ${p.cpuBusy.scenario.toFixed(2)}, bare fastify ${p.cpuBusy.baseline.toFixed(2)}`
            : ''),
      );
    }
    if (r.twin) {
      const t = r.twin;
      const perRound = t.scenarioRps.map((v, i) => `${v.toFixed(0)}/${t.twinRps[i]!.toFixed(0)}`).join(', ');
      out.push(
        `- paired with its bare twin: **${t.ratio.toFixed(3)}** (median of the rounds ${t.medianRatio.toFixed(3)}); 2xx/s per ` +
          `round, this scenario/twin: ${perRound}; p50 ${t.scenarioP50} ms / ${t.twinP50} ms` +
          (t.cpuPerAnswerUs
            ? `; server CPU per 2xx answer (user + system, all slices): this scenario ${t.cpuPerAnswerUs.scenario.toFixed(0)} µs, ` +
              `twin ${t.cpuPerAnswerUs.twin.toFixed(0)} µs`
            : '') +
          (t.scenarioFailures ? `; ${t.scenarioFailures} failed answers or errors of this scenario in the slices` : ''),
      );
    }
    for (const e of r.extras ?? []) out.push(`- ${e.label}: ${e.value}`);
    for (const n of r.notes ?? []) out.push(`- note: ${n}`);
    out.push('');
  }
  return out.join('\n');
}

/** The goals the scenarios report (issue 22's table), in scenario order. */
function goalTable(outcomes: Outcome[]): string[] {
  const goals = outcomes.flatMap((o) => (o.result?.goals ?? []).map((g) => ({ scenario: o.label, ...g })));
  if (!goals.length) return [];
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  return [
    '### Goals (issues 22 and 23)',
    '',
    '| goal | scenario | now | goal | met |',
    '| --- | --- | --- | --- | --- |',
    ...goals.map(
      (g) =>
        `| ${esc(g.what)} | ${g.scenario} | ${esc(g.figure)} | ${esc(g.goal)} | ${g.met === null ? 'n/a' : g.met ? 'yes' : '**no**'} |`,
    ),
    '',
  ];
}

/** the machine's load when the run started: on a shared machine, other work lowers every figure */
const loadAtStart = os.loadavg()[0]!;
/** the bench's PostgreSQL's major version, once started */
let pgVersion: string | null = null;

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const startedAt = new Date();
  const all = await loadScenarios();
  if (opts.only) {
    const unknown = opts.only.filter((n) => !all.some((s) => s.name === n));
    if (unknown.length)
      usage(`unknown scenario ${unknown.join(', ')}; there are: ${all.map((s) => s.name).join(', ')}`);
  }
  const selected = all.filter((s) => s.name === BASELINE || !opts.only || opts.only.includes(s.name));
  const runs = selected.flatMap((scenario) => {
    const engines = scenario.engines ?? ['sqlite'];
    if (engines === 'none') return [{ scenario, engine: opts.engines[0]! }];
    const on = opts.engines.filter((e) => engines.includes(e));
    if (!on.length && opts.only?.includes(scenario.name))
      process.stderr.write(`bench: ${scenario.name} runs on ${engines.join(', ')} only: not run\n`);
    return on.map((engine) => ({ scenario, engine }));
  });
  const m = machine();
  process.stderr.write(
    `bench: ${runs.length} scenario runs, ${opts.warmupS} s warm-up + ${opts.durationS} s each; ${m.cpu}, ${m.cores} cores, Node ${m.node}\n`,
  );
  if (opts.engines.includes('postgresql')) {
    pgVersion = (await benchPostgres()).version;
    process.stderr.write(`bench: PostgreSQL ${pgVersion} started\n`);
  }

  const outcomes: Outcome[] = [];
  try {
    for (const { scenario, engine } of runs) {
      const name = engine === 'sqlite' ? scenario.name : `${scenario.name} (${engine})`;
      process.stderr.write(`bench: ${name}… (load average ${os.loadavg()[0]!.toFixed(2)})\n`);
      const o = await runOne(scenario, engine, opts);
      outcomes.push(o);
      if (o.error) process.stderr.write(`bench: ${o.label} failed: ${o.error}\n`);
      else {
        const r = o.result!;
        const figures = [
          r.summary ? `${r.summary.rps.toFixed(1)} req/s` : '',
          r.paired ? `paired with the baseline ${r.paired.ratio.toFixed(3)}` : '',
          r.twin ? `vs twin ${r.twin.ratio.toFixed(3)}` : '',
        ].filter(Boolean);
        process.stderr.write(
          `bench: ${o.label} done in ${o.wallS.toFixed(1)} s${figures.length ? ` (${figures.join(', ')})` : ''}\n`,
        );
      }
    }
  } finally {
    await stopBenchPostgres();
  }

  const base = outcomes.find((o) => o.scenario.name === BASELINE)?.result?.summary?.rps ?? null;
  const rows = outcomes.map((o) => row(o, base));
  fs.writeFileSync(opts.out, markdown(outcomes, rows, opts, startedAt) + keptWorkLog(opts.out));

  process.stdout.write(`\n${textTable(rows)}\n`);
  for (const o of outcomes) {
    for (const e of o.result?.extras ?? []) process.stdout.write(`${o.label}: ${e.label}: ${e.value}\n`);
    for (const n of o.result?.notes ?? []) process.stdout.write(`${o.label}: note: ${n}\n`);
    if (o.error) process.stdout.write(`${o.label}: FAILED: ${o.error}\n`);
  }
  process.stdout.write(`\nwritten: ${path.relative(process.cwd(), opts.out) || opts.out}\n`);
  process.exitCode = outcomes.some((o) => o.error) ? 1 : 0;
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
