import type { AutocannonRequest } from 'autocannon';

import { lookupHash } from '../../src/crypto/hash.js';
import { formatSigningKey, generateSigningKey } from '../../src/config/signing-key.js';
import { mean } from '../lib/alternate.js';
import {
  mixedHashes,
  lookupRequest,
  requestJson,
  startAssociationsServer,
  verifyLookup,
  type AssociationsServer,
} from '../lib/associations-db.js';
import { runCannon, type CannonSummary } from '../lib/cannon.js';
import { freePort } from '../lib/ports.js';
import { postgresCpuSeconds } from '../lib/postgres.js';
import { cpuSeconds } from '../lib/proc-cpu.js';
import { PAIRED_ROUNDS, type Extra, type Scenario, type ScenarioContext } from '../lib/scenario.js';
import { BIND_PATH, bindBody, bindRequest, checkStoredBinds } from './bind.js';
import { countSessions, emailConf, REQUEST_TOKEN_PATH, uniqueRequest } from './request-token.js';

/** seconds per slice: each round is one slice on one node and one on two */
const SLICE_S = 3;
const BODIES = 16;

interface Node {
  s: AssociationsServer;
  internalUrl: string;
  pid: number;
}

type Load = (node: Node) => { url: string; requests: AutocannonRequest[] };

/** One side's figures over its slices. */
interface Tally {
  ok: number;
  answers: number;
  failures: number;
  seconds: number;
  /** p50 of each cannon's slice, weighted by its answers */
  p50Weighted: number;
  nodeCpuS: number;
  pgCpuS: number;
  rps: number[];
}

const newTally = (): Tally => ({
  ok: 0,
  answers: 0,
  failures: 0,
  seconds: 0,
  p50Weighted: 0,
  nodeCpuS: 0,
  pgCpuS: 0,
  rps: [],
});

async function nodesCpu(nodes: Node[]): Promise<{ nodes: number; pg: number }> {
  return {
    nodes: nodes.reduce((n, node) => n + (cpuSeconds(node.pid) ?? Number.NaN), 0),
    pg: (await postgresCpuSeconds()) ?? Number.NaN,
  };
}

/**
 * The same load on one node at the run's connections, and spread over two nodes at half the connections each (two
 * cannons at once), in alternating slices (the order reversed every other round), after a second of each.
 */
async function compare(ctx: ScenarioContext, nodes: [Node, Node], load: Load): Promise<{ one: Tally; two: Tally }> {
  const c = ctx.connections;
  const half = Math.max(1, Math.floor(c / 2));
  const sides = {
    one: [{ ...load(nodes[0]), connections: c }],
    two: [
      { ...load(nodes[0]), connections: half },
      { ...load(nodes[1]), connections: Math.max(1, c - half) },
    ],
  };
  const tallies = { one: newTally(), two: newTally() };
  const slice = async (side: 'one' | 'two', durationS: number, counted: boolean) => {
    const before = await nodesCpu(nodes);
    const runs: CannonSummary[] = await Promise.all(
      sides[side].map((opts) => runCannon({ ...opts, duration: durationS })),
    );
    const after = await nodesCpu(nodes);
    if (!counted) return;
    const t = tallies[side];
    const seconds = Math.max(...runs.map((r) => r.durationS));
    const ok = runs.reduce((n, r) => n + r.ok2xx, 0);
    t.ok += ok;
    t.seconds += seconds;
    t.rps.push(ok / seconds);
    for (const r of runs) {
      t.answers += r.total;
      t.failures += r.non2xx + r.errors;
      t.p50Weighted += r.p50 * r.total;
    }
    t.nodeCpuS += after.nodes - before.nodes;
    t.pgCpuS += after.pg - before.pg;
  };
  await slice('one', 1, false);
  await slice('two', 1, false);
  for (let round = 0; round < PAIRED_ROUNDS; round++) {
    for (const side of round % 2 ? (['two', 'one'] as const) : (['one', 'two'] as const))
      await slice(side, SLICE_S, true);
  }
  return tallies;
}

function describe(what: string, { one, two }: { one: Tally; two: Tally }): Extra {
  const fig = (t: Tally, n: number) =>
    `${n} node${n === 1 ? '' : 's'} ${(t.ok / t.seconds).toFixed(1)}/s (rounds ${t.rps.map((v) => v.toFixed(0)).join(', ')}), ` +
    `p50 ${(t.p50Weighted / Math.max(1, t.answers)).toFixed(1)} ms, CPU per answer: sydent-ts ` +
    `${((t.nodeCpuS * 1e6) / Math.max(1, t.answers)).toFixed(0)} µs, PostgreSQL ${((t.pgCpuS * 1e6) / Math.max(1, t.answers)).toFixed(0)} µs` +
    (t.failures ? `, ${t.failures} failed answers or errors` : '');
  return {
    label: `**${what}**`,
    value: `${fig(one, 1)}; ${fig(two, 2)}; **two over one: ${(two.ok / two.seconds / (one.ok / one.seconds)).toFixed(3)}**`,
  };
}

async function startNode(ctx: ScenarioContext, smtpPort: number, signingKey: string, pgUrl?: string): Promise<Node> {
  const internalPort = await freePort();
  const s = await startAssociationsServer(ctx, {
    conf: {
      ...emailConf(smtpPort),
      crypto: { 'ed25519.signingkey': signingKey },
      http: { 'internalapi.http.bind_address': '127.0.0.1', 'internalapi.http.port': String(internalPort) },
    },
    ...(pgUrl ? { pgUrl } : {}),
  });
  return { s, internalUrl: `http://127.0.0.1:${internalPort}`, pid: s.server.process.child.pid! };
}

const twoNodes: Scenario = {
  name: 'two-nodes',
  engines: ['postgresql'],
  description:
    'One sydent-ts node against two on the same PostgreSQL database (1,000,000 associations), for the 1-hash v2 ' +
    `lookup, the internal bind and requestToken with mail: ${PAIRED_ROUNDS} rounds of a ${SLICE_S} s slice on one node at ` +
    "the run's connections and one on two nodes at half of them each (two autocannons at once), in turns. Every " +
    'process (both nodes, PostgreSQL, autocannon) shares the same cores: this machine has 2',
  timeLimitS: () => 3 * (2 + PAIRED_ROUNDS * 2 * (SLICE_S + 1)) + 240,
  async run(ctx) {
    const sink = await ctx.startSmtpSink();
    // one identity server in two processes: the same name and signing key
    const signingKey = formatSigningKey(generateSigningKey());
    const a = await startNode(ctx, sink.port, signingKey);
    const b = await startNode(ctx, sink.port, signingKey, a.s.server.pgUrl!);
    const nodes: [Node, Node] = [a, b];
    const extras: Extra[] = [];

    // both nodes answer the same lookups
    const { hashes, expected } = mixedHashes(a.s.db, BODIES / 2, BODIES / 2);
    for (const node of nodes) {
      for (const hash of hashes.slice(0, 2)) {
        const mxid = expected.get(hash);
        await verifyLookup(node.s, [hash], mxid ? new Map([[hash, mxid]]) : new Map());
      }
    }
    // a bind on one node is found by a lookup on the other
    const probe = bindBody(0);
    const bound = await requestJson(`${a.internalUrl}${BIND_PATH}`, {
      headers: { 'content-type': 'application/json' },
      body: probe,
    });
    if (bound.status !== 200) throw new Error(`bind check: status ${bound.status}`);
    const probeHash = lookupHash(probe.address, 'email', a.s.db.pepper);
    await verifyLookup(b.s, [probeHash], new Map([[probeHash, probe.mxid]]));
    const pubkey = await requestJson(`${a.s.server.baseUrl}/_matrix/identity/v2/pubkey/ed25519:0`);
    const serverKey = (pubkey.body as { public_key?: string }).public_key;
    if (!serverKey) throw new Error(`pubkey: ${JSON.stringify(pubkey.body).slice(0, 200)}`);
    extras.push({
      label: 'checks before measuring',
      value: 'a hit and a miss looked up on each node; a bind on the first node found by a lookup on the second',
    });

    ctx.log('lookup-1: one node vs two');
    const lookup = await compare(ctx, nodes, (node) => ({
      url: node.s.server.baseUrl,
      requests: hashes.map((hash) => lookupRequest(node.s, [hash])),
    }));
    extras.push(describe('lookup-1 (2xx/s)', lookup));

    ctx.log('bind: one node vs two');
    const binds = await compare(ctx, nodes, (node) => ({ url: node.internalUrl, requests: [bindRequest()] }));
    await new Promise((r) => setTimeout(r, 500));
    const storedBinds = await checkStoredBinds(a.s.server, a.s.db.count, serverKey);
    extras.push(describe('bind (2xx/s)', binds), {
      label: 'binds stored after the bind load',
      value: `${storedBinds} since the database was built, each with its local and global row and a signed association verifying under the nodes' key`,
    });

    ctx.log('requestToken: one node vs two');
    await sink.settle(300, 5000);
    sink.reset();
    const sessionsBefore = await countSessions(a.s.server);
    const tokens = await compare(ctx, nodes, (node) => ({
      url: node.s.server.baseUrl,
      requests: [uniqueRequest(REQUEST_TOKEN_PATH)],
    }));
    const mails = await sink.settle(300, 10_000);
    const sessions = (await countSessions(a.s.server)) - sessionsBefore;
    extras.push(describe('requestToken with mail (2xx/s)', tokens), {
      label: 'sessions stored vs mails received (requestToken load, warm-up included)',
      value: `${sessions} / ${mails}`,
    });
    const notes: string[] = [];
    if (sessions !== mails) notes.push(`${sessions} sessions stored but ${mails} mails received`);
    if (storedBinds < binds.one.ok + binds.two.ok)
      notes.push(`${storedBinds} binds stored, fewer than the ${binds.one.ok + binds.two.ok} answered 2xx`);
    for (const [what, t] of [
      ['lookup', lookup],
      ['bind', binds],
      ['requestToken', tokens],
    ] as const) {
      const failures = t.one.failures + t.two.failures;
      if (failures) notes.push(`${what}: ${failures} failed answers or errors`);
    }
    extras.push({
      label: 'two over one, mean of the three',
      value: mean([lookup, binds, tokens].map((t) => t.two.ok / t.two.seconds / (t.one.ok / t.one.seconds))).toFixed(3),
    });
    return { extras, notes, goals: [] };
  },
};

export default twoNodes;
