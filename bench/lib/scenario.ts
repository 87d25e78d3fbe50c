import { alternate, mean, median } from './alternate.js';
import { builtServer } from './build.js';
import { startBareFastify, type BareFastify } from './baseline-server.js';
import { runCannon, type CannonOptions, type CannonSummary } from './cannon.js';
import { ROOT } from './child.js';
import { newDatabase, type Engine } from './postgres.js';
import { cpuSeconds } from './proc-cpu.js';
import { startSmsSink, type SmsSink } from './sms-sink.js';
import { startSmtpSink, type SmtpSink } from './smtp-sink.js';
import { startSydent, type StartSydentOptions, type SydentProcess } from './sydent.js';
import { startTwin, type Twin, type TwinSpec } from './twin.js';

/** A figure of a scenario's own, shown under its name in RESULTS.md (e.g. sessions/s). */
export interface Extra {
  label: string;
  value: string;
}

/**
 * A scenario's req/s against the baseline's (bare fastify `GET /`) measured in alternating slices in the same
 * minutes (see alternate.ts): the comparison the goals ask for, free of the machine's drift between the baseline's
 * run at the start and the scenario's.
 */
export interface PairedFigure {
  rounds: number;
  sliceS: number;
  /** bare fastify processes the scenario was paired with (each round measures every one of them) */
  baselineProcesses: number;
  /** each bare fastify process's mean req/s: how far identical processes differ on this machine */
  baselineRpsByProcess: number[];
  /** the scenario's server processes measured (one unless the scenario started several), and each one's mean req/s */
  scenarioProcesses: number;
  scenarioRpsByProcess: number[];
  /** req/s per round, in round order; each the mean of its processes in that round */
  baselineRps: number[];
  scenarioRps: number[];
  /** mean of the scenario's slices over mean of the baseline's */
  ratio: number;
  /** median of the per-round ratios */
  medianRatio: number;
  /**
   * Server CPU time (user + system, from /proc) per answer over all slices, of the scenario's processes and of the
   * bare fastify ones; null where it could not be read. The servers are CPU-bound under this load (they almost never
   * sleep), so req/s follows it: a figure that shows where a ratio comes from, and varies less between minutes.
   */
  cpuPerAnswerUs: { scenario: number; baseline: number } | null;
  /** the same CPU time over the slices' length: how much of one core the servers used (1: never waiting) */
  cpuBusy: { scenario: number; baseline: number } | null;
  /** what the baseline processes answered: `GET /` unless the scenario gave a load of its own */
  baselineLabel: string;
}

/**
 * A write scenario against its bare twin (twin-server.ts: the same essential work on a bare fastify route, a copy of
 * the same database, an SMTP sink alike), in alternating slices of the same minutes. Figures are 2xx answers per
 * second: a write that failed did no work.
 */
export interface TwinFigure {
  rounds: number;
  sliceS: number;
  /** 2xx/s per round, in round order */
  scenarioRps: number[];
  twinRps: number[];
  /** the scenario's 2xx over all its slices' seconds, over the twin's */
  ratio: number;
  medianRatio: number;
  /** median latency over the slices, ms */
  scenarioP50: number;
  twinP50: number;
  /** server CPU (user + system, /proc) per 2xx answer over all slices, µs; null where it could not be read */
  cpuPerAnswerUs: { scenario: number; twin: number } | null;
  /** answers other than 2xx, and socket errors, on each side */
  scenarioFailures: number;
  twinFailures: number;
}

/** One line of RESULTS.md's goal table (issue 22's table): the figure, its goal, and whether it is met. */
export interface Goal {
  /** what is measured, as the table names it */
  what: string;
  figure: string;
  goal: string;
  /** null: not decided in this run (it needs another scenario's figure that was not measured) */
  met: boolean | null;
}

/**
 * Rounds of a paired measurement, each one slice of the scenario and one of each of PAIRED_BASELINES bare fastify
 * processes. Several baseline processes because identical processes differ here by up to 40 % in req/s, depending
 * on where the machine placed them (measured: bench/interleaved.ts --processes), which one baseline process would
 * pass on to the ratio whole.
 */
export const PAIRED_ROUNDS = 4;
export const PAIRED_SLICE_S = 2;
export const PAIRED_BASELINES = 3;

export interface ScenarioResult {
  /** the measured run (warm-up excluded); none for a scenario that measures no load (start-up) */
  summary?: CannonSummary;
  /** the same load paired with the baseline (`ctx.pairedWithBaseline`), for the scenarios that have a goal against it */
  paired?: PairedFigure;
  /** the same load paired with the scenario's bare twin (`ctx.pairedWithTwin`), for the write scenarios */
  twin?: TwinFigure;
  /** the goals this scenario measures */
  goals?: Goal[];
  extras?: Extra[];
  /** anything odd, shown in RESULTS.md and on stdout */
  notes?: string[];
}

export interface Scenario {
  /** what `--only` selects; unique */
  name: string;
  /**
   * The store engines it runs on (`--engine`), once per engine: default SQLite only. `none`: it starts no sydent-ts
   * (the bare baselines) and runs once, whatever the engines.
   */
  engines?: readonly Engine[] | 'none';
  /** one line for RESULTS.md */
  description: string;
  run(ctx: ScenarioContext): Promise<ScenarioResult>;
  /**
   * How long the scenario may take, seconds (default: warm-up + duration + 120): for scenarios whose length is not
   * the run's duration (a database build, a long load, an idle wait).
   */
  timeLimitS?(run: { warmupS: number; durationS: number; sessions: number | null }): number;
}

export interface MeasureHooks {
  /** after the warm-up run, before the measured one (e.g. reset a counter) */
  afterWarmup?: () => void | Promise<void>;
}

/** What a scenario gets: servers to start (stopped for it when it ends), and autocannon with the run's timing. */
export interface ScenarioContext {
  root: string;
  /**
   * the store engine of this run of the scenario: on PostgreSQL, `startServer` without `pgUrl` gives the server a new,
   * empty database on the bench's PostgreSQL (bench/lib/postgres.ts), dropped when the scenario ends
   */
  engine: Engine;
  /** seconds measured per scenario (`--duration`) */
  durationS: number;
  /** seconds of warm-up before it, not counted */
  warmupS: number;
  /** autocannon connections unless a scenario says otherwise */
  connections: number;
  /** `--sessions <n>`: the number of requestTokens of the memory scenario (null: its default) */
  sessions: number | null;
  /** sydent-ts in its own process; stopped when the scenario ends */
  startServer(opts?: StartSydentOptions): Promise<SydentProcess>;
  /** the bare fastify baseline in its own process; stopped when the scenario ends */
  startBareFastify(): Promise<BareFastify>;
  /** a bare twin (twin-server.ts) in its own process; stopped when the scenario ends */
  startTwin(spec: TwinSpec): Promise<Twin>;
  /** a loopback SMTP sink; closed when the scenario ends */
  startSmtpSink(): Promise<SmtpSink>;
  /** a loopback OpenMarket gateway accepting every SMS; closed when the scenario ends */
  startSmsSink(): Promise<SmsSink>;
  /** warm-up (`warmupS`) then the measured run (`durationS`); returns the measured run's summary */
  measure(opts: CannonOptions, hooks?: MeasureHooks): Promise<CannonSummary>;
  /**
   * The same load (after `measure`) in PAIRED_ROUNDS rounds of one PAIRED_SLICE_S slice of it and one of each of
   * PAIRED_BASELINES bare fastify processes (`GET /`) started for the purpose, in a new order every round. With
   * `more`, the scenario runs on more processes of its server, which `more.start` starts (returning the same load
   * aimed at the new one): each round measures every one and the scenario's figure of the round is their mean,
   * since the scenario's processes differ as the baseline's do.
   */
  pairedWithBaseline(load: CannonOptions, more?: MoreProcesses, baseline?: BaselineLoad): Promise<PairedFigure>;
  /**
   * A write scenario's load and its twin's, in PAIRED_ROUNDS rounds of one PAIRED_SLICE_S slice each (the order
   * reversed every other round), after a warm-up of the twin. `afterSlice` runs after every slice, e.g. to let the
   * mails of requests still in flight land (so the next slice starts on an idle machine) and count them.
   */
  pairedWithTwin(
    scenario: CannonOptions,
    twin: CannonOptions,
    hooks?: { afterSlice?(side: TwinSide, summary: CannonSummary): Promise<void> | void },
  ): Promise<TwinFigure>;
  /** one autocannon run exactly as given (give `duration` or `amount`; `stopAfterS` ends an `amount` run early) */
  cannon(opts: CannonOptions, limits?: { stopAfterS?: number }): Promise<CannonSummary>;
  /** run `fn` when the scenario ends (last registered, first run) */
  defer(fn: () => unknown): void;
  /** a progress line on stderr */
  log(message: string): void;
}

/** A load without the duration or amount a scenario gave: the run's timing wins. */
function untimed({ amount: _amount, duration: _duration, ...load }: CannonOptions): CannonOptions {
  return load;
}

type TwinSide = 'scenario' | 'twin';

/** One side of `pairedWithTwin` over its slices: its server's CPU (`known` false once /proc could not be read) and answers. */
interface TwinTally {
  pid: number | undefined;
  known: boolean;
  cpuS: number;
  /** 2xx/s per slice */
  rps: number[];
  ok: number;
  s: number;
  failures: number;
  p50: number[];
}

/** What the bare processes of `pairedWithBaseline` are sent instead of `GET /` (e.g. a POST like the scenario's). */
export interface BaselineLoad {
  /** the load for a bare fastify process at `baseUrl` */
  load(baseUrl: string): CannonOptions;
  /** for RESULTS.md, e.g. "`POST /` with the same body" */
  label: string;
}

/** More processes of a scenario's server for `pairedWithBaseline`. */
export interface MoreProcesses {
  /** how many more (besides the one the load was measured on) */
  count: number;
  /** starts one more and returns the load aimed at it */
  start(): Promise<CannonOptions>;
}

export interface ContextOptions {
  engine?: Engine;
  durationS: number;
  warmupS: number;
  connections: number;
  name: string;
  sessions?: number | null;
}

/**
 * The server as operators run it (`npm start`: the bundle under plain node), unless the scenario runs another
 * checkout (`root`), a profile is taken (`BENCH_CPU_PROF`: frames in the TypeScript) or `BENCH_FROM_SOURCE=1` asks
 * for src/ through tsx, whose keepNames wrappers and loader cost CPU the bundle does not.
 */
function asOperatorsRunIt(opts: StartSydentOptions | undefined): StartSydentOptions | undefined {
  if (opts?.builtMain || opts?.root || process.env['BENCH_CPU_PROF'] || process.env['BENCH_FROM_SOURCE'] === '1') {
    return opts;
  }
  return { ...opts, builtMain: builtServer() };
}

/** A context and the function that releases everything the scenario started. */
export function createContext(opts: ContextOptions): {
  ctx: ScenarioContext;
  /** what the processes the scenario started wrote to stderr so far, by process */
  stderr: () => Array<{ what: string; text: string }>;
  dispose: () => Promise<void>;
} {
  const cleanups: Array<() => unknown> = [];
  /** the process behind each loopback port this context started a server on: whose CPU a load's slices use */
  const pidByPort = new Map<number, number>();
  const processes: Array<{ what: string; stderr: () => string }> = [];
  const log = (message: string) => process.stderr.write(`  [${opts.name}] ${message}\n`);
  const ctx: ScenarioContext = {
    root: ROOT,
    engine: opts.engine ?? 'sqlite',
    durationS: opts.durationS,
    warmupS: opts.warmupS,
    connections: opts.connections,
    sessions: opts.sessions ?? null,
    async startServer(serverOpts) {
      if (ctx.engine === 'postgresql' && !serverOpts?.pgUrl) {
        if (serverOpts?.prepareDb) throw new Error('prepareDb fills a SQLite file: on PostgreSQL give pgUrl');
        const db = await newDatabase();
        cleanups.push(db.drop);
        serverOpts = { ...serverOpts, pgUrl: db.url };
      }
      const server = await startSydent(asOperatorsRunIt(serverOpts));
      cleanups.push(() => server.stop());
      const pid = server.process.child.pid;
      if (pid !== undefined) {
        pidByPort.set(server.port, pid);
        // the internal listener's load (bind) is the same process's
        const internal = Number(serverOpts?.conf?.http?.['internalapi.http.port']);
        if (internal > 0) pidByPort.set(internal, pid);
      }
      processes.push({ what: `sydent-ts (port ${server.port})`, stderr: server.process.stderr });
      return server;
    },
    async startBareFastify() {
      const server = await startBareFastify();
      cleanups.push(() => server.stop());
      if (server.process.child.pid !== undefined)
        pidByPort.set(Number(new URL(server.baseUrl).port), server.process.child.pid);
      processes.push({ what: 'bare fastify', stderr: server.process.stderr });
      return server;
    },
    async startTwin(spec) {
      const twin = await startTwin(spec);
      cleanups.push(() => twin.stop());
      if (twin.process.child.pid !== undefined) pidByPort.set(twin.port, twin.process.child.pid);
      processes.push({ what: `bare twin (${spec.kind})`, stderr: twin.process.stderr });
      return twin;
    },
    async startSmtpSink() {
      const sink = await startSmtpSink();
      cleanups.push(() => sink.close());
      return sink;
    },
    async startSmsSink() {
      const sink = await startSmsSink();
      cleanups.push(() => sink.close());
      return sink;
    },
    async measure(cannonOpts, hooks) {
      const base = { connections: opts.connections, ...untimed(cannonOpts) };
      if (opts.warmupS > 0) await runCannon({ ...base, duration: opts.warmupS });
      await hooks?.afterWarmup?.();
      return runCannon({ ...base, duration: opts.durationS });
    },
    async pairedWithBaseline(load, more, baseline) {
      // The bare processes and the scenario's further ones are started in turns: here a process started later can run
      // faster than one started earlier (where the machine placed it), so neither side gets all the late starts.
      const loads: CannonOptions[] = [untimed(load)];
      const bares: BareFastify[] = [];
      for (let i = 0; i < Math.max(PAIRED_BASELINES, (more?.count ?? 0) + 1); i++) {
        if (i < PAIRED_BASELINES) bares.push(await ctx.startBareFastify());
        if (more && i < more.count) loads.push(untimed(await more.start()));
      }
      log(
        `paired with the baseline: ${PAIRED_ROUNDS} rounds of ${PAIRED_SLICE_S} s slices, ${loads.length} scenario and ` +
          `${PAIRED_BASELINES} bare fastify processes`,
      );
      const scenarioNames = loads.map((_, i) => `scenario ${i + 1}`);
      const baselineNames = bares.map((_, i) => `baseline ${i + 1}`);
      const cases = new Map<string, CannonOptions>([
        ...loads.map((load, i): [string, CannonOptions] => [scenarioNames[i]!, load]),
        ...bares.map((bare, i): [string, CannonOptions] => [
          baselineNames[i]!,
          baseline ? untimed(baseline.load(bare.baseUrl)) : { url: `${bare.baseUrl}/` },
        ]),
      ]);
      // Per case: its server's process, and the CPU seconds, answers and seconds of load over its slices (`known`
      // false once /proc could not be read).
      const cpu = new Map(
        [...cases].map(([name, load]) => {
          const pid = pidByPort.get(Number(new URL(load.url).port));
          return [name, { pid, s: 0, answers: 0, wallS: 0, known: pid !== undefined }];
        }),
      );
      let cpuBefore: number | null = null;
      const runs = await alternate(cases, {
        rounds: PAIRED_ROUNDS,
        sliceS: PAIRED_SLICE_S,
        connections: opts.connections,
        warmupS: 1,
        order: 'shuffle',
        beforeSlice: (name) => {
          const { pid } = cpu.get(name)!;
          cpuBefore = pid === undefined ? null : cpuSeconds(pid);
        },
        afterSlice: (name, summary) => {
          const c = cpu.get(name)!;
          const after = c.pid === undefined ? null : cpuSeconds(c.pid);
          if (cpuBefore === null || after === null) c.known = false;
          c.s += (after ?? 0) - (cpuBefore ?? 0);
          c.answers += summary.total;
          c.wallS += summary.durationS;
        },
      });
      const cpuOf = (names: string[]): { perAnswerUs: number; busy: number } | null => {
        const all = names.map((name) => cpu.get(name)!);
        if (!all.every((c) => c.known)) return null;
        const sum = (of: (c: (typeof all)[number]) => number) => all.reduce((n, c) => n + of(c), 0);
        const [s, answers] = [sum((c) => c.s), sum((c) => c.answers)];
        return answers ? { perAnswerUs: (s * 1e6) / answers, busy: s / sum((c) => c.wallS) } : null;
      };
      const scenarioCpu = cpuOf(scenarioNames);
      const baselineCpu = cpuOf(baselineNames);
      const both = scenarioCpu !== null && baselineCpu !== null;
      const perRound = (names: string[]) => {
        const byProcess = names.map((name) => runs.get(name)!.map((r) => r.rps));
        return {
          byProcess,
          rounds: Array.from({ length: PAIRED_ROUNDS }, (_, round) => mean(byProcess.map((rps) => rps[round]!))),
        };
      };
      const base = perRound(baselineNames);
      const scen = perRound(scenarioNames);
      const bad = scenarioNames.reduce(
        (n, name) => n + runs.get(name)!.reduce((m, r) => m + r.non2xx + r.errors, 0),
        0,
      );
      if (bad > 0) throw new Error(`paired measurement: ${bad} non-2xx answers or errors`);
      return {
        rounds: PAIRED_ROUNDS,
        sliceS: PAIRED_SLICE_S,
        baselineProcesses: PAIRED_BASELINES,
        baselineRpsByProcess: base.byProcess.map(mean),
        scenarioProcesses: loads.length,
        scenarioRpsByProcess: scen.byProcess.map(mean),
        baselineRps: base.rounds,
        scenarioRps: scen.rounds,
        ratio: mean(scen.rounds) / mean(base.rounds),
        medianRatio: median(scen.rounds.map((v, i) => v / base.rounds[i]!)),
        cpuPerAnswerUs: both ? { scenario: scenarioCpu.perAnswerUs, baseline: baselineCpu.perAnswerUs } : null,
        cpuBusy: both ? { scenario: scenarioCpu.busy, baseline: baselineCpu.busy } : null,
        baselineLabel: baseline?.label ?? '`GET /`',
      };
    },
    async pairedWithTwin(scenarioLoad, twinLoad, hooks) {
      const sides = { scenario: untimed(scenarioLoad), twin: untimed(twinLoad) } as const;
      const tally = (load: CannonOptions): TwinTally => {
        const pid = pidByPort.get(Number(new URL(load.url).port));
        return { pid, known: pid !== undefined, cpuS: 0, rps: [], ok: 0, s: 0, failures: 0, p50: [] };
      };
      const tallies: Record<TwinSide, TwinTally> = { scenario: tally(sides.scenario), twin: tally(sides.twin) };
      log(`paired with its bare twin: ${PAIRED_ROUNDS} rounds of ${PAIRED_SLICE_S} s slices`);
      const slice = async (side: TwinSide, durationS: number, counted: boolean) => {
        const t = tallies[side];
        const before = t.pid === undefined ? null : cpuSeconds(t.pid);
        const summary = await runCannon({ connections: opts.connections, ...sides[side], duration: durationS });
        const after = t.pid === undefined ? null : cpuSeconds(t.pid);
        await hooks?.afterSlice?.(side, summary);
        if (!counted) return;
        if (before === null || after === null) t.known = false;
        t.cpuS += (after ?? 0) - (before ?? 0);
        t.rps.push(summary.ok2xx / summary.durationS);
        t.ok += summary.ok2xx;
        t.s += summary.durationS;
        t.failures += summary.non2xx + summary.errors;
        t.p50.push(summary.p50);
      };
      await slice('twin', 1, false);
      for (let round = 0; round < PAIRED_ROUNDS; round++) {
        const order = round % 2 ? (['twin', 'scenario'] as const) : (['scenario', 'twin'] as const);
        for (const side of order) await slice(side, PAIRED_SLICE_S, true);
      }
      const { scenario, twin } = tallies;
      if (twin.failures > 0) throw new Error(`the bare twin answered ${twin.failures} requests with a failure`);
      const cpuKnown = scenario.known && twin.known && scenario.ok > 0 && twin.ok > 0;
      return {
        rounds: PAIRED_ROUNDS,
        sliceS: PAIRED_SLICE_S,
        scenarioRps: scenario.rps,
        twinRps: twin.rps,
        ratio: scenario.ok / scenario.s / (twin.ok / twin.s),
        medianRatio: median(scenario.rps.map((v, i) => v / twin.rps[i]!)),
        scenarioP50: median(scenario.p50),
        twinP50: median(twin.p50),
        cpuPerAnswerUs: cpuKnown
          ? { scenario: (scenario.cpuS * 1e6) / scenario.ok, twin: (twin.cpuS * 1e6) / twin.ok }
          : null,
        scenarioFailures: scenario.failures,
        twinFailures: twin.failures,
      };
    },
    cannon: (cannonOpts, limits) => runCannon({ connections: opts.connections, ...cannonOpts }, limits),
    defer: (fn) => cleanups.push(fn),
    log,
  };
  return {
    ctx,
    stderr: () => processes.map((p) => ({ what: p.what, text: p.stderr() })),
    async dispose() {
      for (const fn of cleanups.reverse()) {
        try {
          await fn();
        } catch (error) {
          log(`cleanup failed: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
      cleanups.length = 0;
    },
  };
}
