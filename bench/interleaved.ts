/**
 * Interleaved measurement of the hot paths against the bare fastify baseline, for a machine whose load changes
 * from one minute to the next (a shared one): every case runs for `--seconds` in each of `--rounds` rounds, in a
 * new random order each round, so all of them see the same conditions, and each case's server CPU time per request
 * is read from /proc (Linux), a figure that depends far less on the machine's load than requests/s.
 *
 *   node --import tsx bench/interleaved.ts [--rounds <n>] [--seconds <s>] [--only <case>,…] [--before <checkout>]…
 *        [--processes <n>] [--rounds-detail]
 *
 * Cases: `baseline` (bare fastify `GET /`), `baseline-post` (bare fastify `POST /` with lookup-1's headers and body
 * shape: the ceiling of a JSON POST), `hash-details` and `lookup-1` (sydent-ts, 1,000,000 associations, as the
 * scenarios of the same names). `--before <dir>`: also runs hash-details and lookup-1 on the sydent-ts of another
 * checkout (its src/main.ts, same database), e.g. a copy of the code before a change, labelled "(before)"; given
 * more than once, each is labelled with its directory's name. `--processes <n>`: n processes of every server (started
 * in turns), each a case of its own (`#1`, `#2`, …), then a table of all of them together: identical processes differ
 * here by up to 40 % in req/s, depending on where the machine placed them. `--rounds-detail`: also prints every
 * round's req/s. The `client` column is this process's CPU per answer (autocannon's share of the work).
 *
 * Not part of `npm run bench`; its figures are not written to RESULTS.md.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AutocannonOptions } from 'autocannon';
import { lookupRequest, mixedHashes, prepareAssociationsDb, type AssociationsDb } from './lib/associations-db.js';
import { alternate, mean, median } from './lib/alternate.js';
import { cpuSeconds } from './lib/proc-cpu.js';
import { createContext } from './lib/scenario.js';

const CASES = ['baseline', 'baseline-post', 'hash-details', 'lookup-1'] as const;

function usage(problem?: string): never {
  if (problem) process.stderr.write(`interleaved: ${problem}\n`);
  process.stderr.write(
    'usage: node --import tsx bench/interleaved.ts [--rounds <n>] [--seconds <s>] [--only <case>,…] [--before <checkout>]… [--processes <n>] [--rounds-detail]\n',
  );
  process.exit(2);
}

const opts = {
  rounds: 10,
  seconds: 1,
  only: [...CASES] as string[],
  before: [] as string[],
  connections: 10,
  detail: false,
  processes: 1,
};
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i]!;
  const value = () => argv[++i] ?? usage(`${arg} needs a value`);
  const num = () => {
    const n = Number(value());
    if (!Number.isInteger(n) || n < 1) usage(`${arg} needs a whole number ≥ 1`);
    return n;
  };
  if (arg === '--rounds') opts.rounds = num();
  else if (arg === '--seconds') opts.seconds = num();
  else if (arg === '--connections') opts.connections = num();
  else if (arg === '--only')
    opts.only = value()
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  else if (arg === '--before') opts.before.push(path.resolve(value()));
  else if (arg === '--processes') opts.processes = num();
  else if (arg === '--rounds-detail') opts.detail = true;
  else usage(`unknown argument ${arg}`);
}
const unknown = opts.only.filter((c) => !(CASES as readonly string[]).includes(c));
if (unknown.length) usage(`unknown case ${unknown.join(', ')}; there are: ${CASES.join(', ')}`);
if (!opts.only.includes('baseline')) opts.only.unshift('baseline');
for (const dir of opts.before) if (!fs.existsSync(path.join(dir, 'src/main.ts'))) usage(`${dir} has no src/main.ts`);

interface Case {
  pid: number;
  cannon: AutocannonOptions;
  rps: number[];
  answers: number;
  cpuS: number;
  cpuKnown: boolean;
  /** this process's CPU seconds during the case's slices: autocannon's, the client's share of the work */
  clientCpuS: number;
  bad: number;
}

const { ctx, dispose } = createContext({
  name: 'interleaved',
  durationS: opts.seconds,
  warmupS: 2,
  connections: opts.connections,
});
try {
  const cases = new Map<string, Case>();
  const add = (name: string, pid: number, cannon: AutocannonOptions) =>
    cases.set(name, { pid, cannon, rps: [], answers: 0, cpuS: 0, cpuKnown: true, clientCpuS: 0, bad: 0 });

  // This checkout from its source too (not the bundle), as the others run: the comparison is of the code alone.
  const sydents: Array<[string, string]> = [['', ctx.root]];
  for (const dir of opts.before)
    sydents.push([opts.before.length === 1 ? ' (before)' : ` (${path.basename(dir)})`, dir]);
  // Several processes of each server, started in turns, when asked: identical processes differ by up to 40 % here
  // (where the machine placed them), so one process of each can show a ratio that is the processes', not the code's.
  for (let n = 1; n <= opts.processes; n++) {
    const nth = opts.processes > 1 ? ` #${n}` : '';
    if (opts.only.some((c) => c.startsWith('baseline'))) {
      const bare = await ctx.startBareFastify();
      const pid = bare.process.child.pid!;
      if (opts.only.includes('baseline')) add(`baseline${nth}`, pid, { url: `${bare.baseUrl}/` });
      if (opts.only.includes('baseline-post')) {
        const headers = {
          authorization: `Bearer ${randomBytes(24).toString('hex')}`,
          'content-type': 'application/json',
        };
        const pepper = randomBytes(4).toString('base64url').slice(0, 5);
        const requests = Array.from({ length: 16 }, () => ({
          method: 'POST' as const,
          path: '/',
          headers,
          body: JSON.stringify({ algorithm: 'sha256', pepper, addresses: [randomBytes(32).toString('base64url')] }),
        }));
        add(`baseline-post${nth}`, pid, { url: bare.baseUrl, requests });
      }
    }

    if (opts.only.includes('hash-details') || opts.only.includes('lookup-1')) {
      for (const [label, root] of sydents) {
        let db: AssociationsDb | undefined;
        const server = await ctx.startServer({
          root,
          prepareDb: async (dbPath) => {
            db = await prepareAssociationsDb(dbPath);
          },
          startTimeoutMs: 60_000,
        });
        const s = {
          server,
          db: db!,
          authHeaders: { authorization: `Bearer ${db!.accessToken}`, 'content-type': 'application/json' },
        };
        const pid = server.process.child.pid!;
        if (opts.only.includes('hash-details')) {
          add(`hash-details${label}${nth}`, pid, {
            url: `${server.baseUrl}/_matrix/identity/v2/hash_details`,
            headers: { authorization: s.authHeaders.authorization },
          });
        }
        if (opts.only.includes('lookup-1')) {
          const { hashes } = mixedHashes(s.db, 8, 8);
          add(`lookup-1${label}${nth}`, pid, {
            url: server.baseUrl,
            requests: hashes.map((h) => lookupRequest(s, [h])),
          });
        }
      }
    }
  }

  ctx.log(`${cases.size} cases, ${opts.rounds} rounds`);
  const cpuBefore = new Map<string, number | null>();
  let clientBefore = process.cpuUsage();
  await alternate(new Map([...cases].map(([name, c]) => [name, c.cannon])), {
    rounds: opts.rounds,
    sliceS: opts.seconds,
    connections: opts.connections,
    warmupS: 2,
    order: 'shuffle',
    beforeSlice: (name) => {
      cpuBefore.set(name, cpuSeconds(cases.get(name)!.pid));
      clientBefore = process.cpuUsage();
    },
    afterSlice: (name, res) => {
      const c = cases.get(name)!;
      const before = cpuBefore.get(name) ?? null;
      const client = process.cpuUsage(clientBefore);
      c.clientCpuS += (client.user + client.system) / 1e6;
      const after = cpuSeconds(c.pid);
      if (before === null || after === null) c.cpuKnown = false;
      else c.cpuS += after - before;
      c.rps.push(res.rps);
      c.answers += res.total;
      c.bad += res.non2xx + res.errors;
    },
  });

  // The baseline of a round: the mean of its bare fastify processes in that round.
  const group = (name: string) => name.replace(/ #\d+$/, '');
  const baselines = [...cases].filter(([name]) => group(name) === 'baseline').map(([, c]) => c);
  const baseRps = Array.from({ length: opts.rounds }, (_, i) => mean(baselines.map((c) => c.rps[i]!)));
  const baseMean = mean(baseRps);
  const cpuPerReq = (cs: Case[]) => {
    const answers = cs.reduce((n, c) => n + c.answers, 0);
    return cs.every((c) => c.cpuKnown) && answers
      ? ((cs.reduce((n, c) => n + c.cpuS, 0) * 1e6) / answers).toFixed(1)
      : 'n/a';
  };
  const clientPerReq = (cs: Case[]) => {
    const answers = cs.reduce((n, c) => n + c.answers, 0);
    return answers ? ((cs.reduce((n, c) => n + c.clientCpuS, 0) * 1e6) / answers).toFixed(1) : 'n/a';
  };
  const header = `${'case'.padEnd(22)} ${'req/s'.padStart(7)}  ${'vs baseline'.padStart(11)}  ${'(median)'.padStart(8)}  server CPU µs/req  client\n`;
  const row = (name: string, cs: Case[]) => {
    const rps = Array.from({ length: opts.rounds }, (_, i) => mean(cs.map((c) => c.rps[i]!)));
    const ratios = rps.map((v, i) => v / baseRps[i]!);
    const bad = cs.reduce((n, c) => n + c.bad, 0);
    return (
      `${name.padEnd(22)} ${mean(rps).toFixed(0).padStart(7)}  ${(mean(rps) / baseMean).toFixed(3).padStart(11)}  ` +
      `${median(ratios).toFixed(3).padStart(8)}  ${cpuPerReq(cs).padStart(17)}  ${clientPerReq(cs).padStart(6)}${bad ? `  (${bad} non-2xx or errors)` : ''}\n`
    );
  };
  process.stdout.write(
    `\n${opts.rounds} rounds of ${opts.seconds} s per case, ${opts.connections} connections, order shuffled each round\n\n${header}`,
  );
  for (const [name, c] of cases) process.stdout.write(row(name, [c]));
  if (opts.processes > 1) {
    process.stdout.write(
      `\nall ${opts.processes} processes of each case together (each round: the mean of its processes)\n\n${header}`,
    );
    const groups = new Map<string, Case[]>();
    for (const [name, c] of cases) groups.set(group(name), [...(groups.get(group(name)) ?? []), c]);
    for (const [name, cs] of groups) process.stdout.write(row(name, cs));
  }
  if (opts.detail) {
    process.stdout.write('\nreq/s per round (in round order):\n');
    for (const [name, c] of cases)
      process.stdout.write(`${name.padEnd(22)} ${c.rps.map((v) => v.toFixed(0).padStart(6)).join(' ')}\n`);
  }
  process.stdout.write(
    "\nvs baseline: mean req/s over the baseline's (with several bare fastify processes, their mean in each round);\n" +
      '(median): the median of the per-round ratios. The two baseline cases share a bare fastify process, as do the\n' +
      "sydent-ts cases of one checkout (each case runs alone). client: this process's CPU (autocannon) per answer.\n",
  );
} finally {
  await dispose();
}
