/**
 * Turns a machine into the three files developers look at: its JSON (`machine.toJSON()`), a Mermaid diagram
 * (also what the debug page draws, with live counts), and a `createMachine({...})` source Stately Studio imports.
 * Generated from the machine itself, so a test can tell when the committed files are stale and a changed machine
 * is drawn as it is.
 */
import type { AnyStateMachine } from 'xstate';
import { stateNames } from './state-value.js';

interface JsonTransition {
  target?: string[];
  guard?: string | { type: string };
  actions?: (string | { type: string })[];
  eventType: string;
  reenter?: boolean;
}

interface JsonInvoke {
  src: string;
  id: string;
}

interface JsonState {
  id: string;
  key: string;
  type: string;
  initial?: { target: string[] };
  states: Record<string, JsonState>;
  on: Record<string, JsonTransition[]>;
  invoke: JsonInvoke[];
  description?: string;
}

/** toJSON() still holds state-node objects in places; a JSON round trip leaves plain data. */
const plain = (machine: AnyStateMachine): JsonState => JSON.parse(JSON.stringify(machine.toJSON())) as JsonState;

const nameOf = (x: string | { type: string } | undefined): string | undefined => (typeof x === 'string' ? x : x?.type);

export function machineJson(machine: AnyStateMachine): string {
  return `${JSON.stringify(machine.toJSON(), null, 2)}\n`;
}

/** `#root.a.b` → `a.b` (the id path below the root) */
function pathOf(target: string, rootId: string): string {
  return target.replace(/^#/, '').replace(new RegExp(`^${rootId}\\.?`), '');
}

/** done/error events of an invoked actor read as `done: sendToken` in a diagram */
function eventLabel(event: string, invokes: JsonInvoke[]): string {
  const m = /^xstate\.(done|error)\.actor\.(.+)$/.exec(event);
  if (!m) return event;
  const src = invokes.find((i) => i.id === m[2])?.src ?? m[2];
  return `${m[1] === 'done' ? 'done' : 'error'}: ${src}`;
}

function atomicStates(
  state: JsonState,
  prefix = '',
  chain: JsonState[] = [],
): { path: string; node: JsonState; chain: JsonState[] }[] {
  const kids = Object.values(state.states);
  // chain: the node and its ancestors, nearest first, as XState looks for a transition
  const here = [state, ...chain];
  if (kids.length === 0) return [{ path: prefix, node: state, chain: here }];
  return kids.flatMap((k) => atomicStates(k, prefix ? `${prefix}.${k.key}` : k.key, here));
}

/** The compound states below the root, parents before their children: `path` and the atomic paths inside. */
function compoundStates(state: JsonState, prefix = ''): { path: string; node: JsonState; atoms: string[] }[] {
  return Object.values(state.states).flatMap((k) => {
    const path = prefix ? `${prefix}.${k.key}` : k.key;
    if (Object.keys(k.states).length === 0) return [];
    return [{ path, node: k, atoms: atomicStates(k, path).map((a) => a.path) }, ...compoundStates(k, path)];
  });
}

/** A state-changing transition as a diagram draws it (atomic state paths). */
interface Arrow {
  from: string;
  to: string;
  guard: string | undefined;
  events: string[];
  /** the path of the state that declares each event's transition ('' for the machine itself) */
  declaredAt: Record<string, string>;
}

/**
 * A box around states. Either one of the machine's compound states (`state` is its name): the transitions it
 * declares for all its states are arrows from the box. Or a box the diagram adds around states that share a
 * rule (the same events and guard to the same target), drawn once from the box instead of from each state: then
 * `rules` say what every state inside does, e.g. `SUBMIT_TOKEN, BIND [isExpired]` → `expired`.
 */
export interface DiagramGroup {
  id: string;
  /** the compound state this box is, by name; absent for a box of shared rules */
  state?: string;
  rules: { label: string; to: string }[];
  /** the states directly inside (not inside a nested box) */
  states: string[];
  groups: DiagramGroup[];
}

export interface DiagramEdge {
  /** a state, or a box's id when `fromGroup` */
  from: string;
  fromGroup: boolean;
  to: string;
  labels: string[];
}

/** A machine laid out for drawing, in the machine's own names (state names and event names as the debug endpoints give them). */
export interface Diagram {
  initial: string | undefined;
  /** atomic states by name (see state-value.ts), in definition order */
  states: string[];
  finals: string[];
  /** every event name that moves the machine, in the order the machine declares them */
  events: string[];
  /** transitions from a state back to itself, listed inside its box */
  selfLoops: Record<string, string[]>;
  groups: DiagramGroup[];
  /** the remaining arrows (parallel ones merged, a line per label), and one from each box to each of its targets */
  edges: DiagramEdge[];
}

/** A rule shared by at least this many states is drawn once, from a box around them. */
const MIN_GROUP = 3;

interface Arrows {
  atoms: ReturnType<typeof atomicStates>;
  compounds: ReturnType<typeof compoundStates>;
  /** the atomic state the machine starts in */
  initial: string | undefined;
  arrows: Arrow[];
  events: string[];
}

/** Machines do not change once made; the hosts ask on every transition. */
const arrowCache = new WeakMap<AnyStateMachine, Arrows>();

function allArrows(machine: AnyStateMachine): Arrows {
  const cached = arrowCache.get(machine);
  if (cached) return cached;
  const root = plain(machine);
  const id = root.id;
  const atoms = atomicStates(root);
  const byPath = new Map<string, JsonState>();
  const index = (node: JsonState, prefix: string) => {
    byPath.set(prefix, node);
    for (const k of Object.values(node.states)) index(k, prefix ? `${prefix}.${k.key}` : k.key);
  };
  index(root, '');
  /** a compound target is entered at its initial state */
  const atomic = (p: string): string => {
    const node = byPath.get(p);
    const first = node?.initial?.target[0];
    if (!node || Object.keys(node.states).length === 0 || !first) return p;
    return atomic(pathOf(first, id));
  };
  // Event names in the order the machine declares them: the machine's own first, then each state's, in order.
  const events: string[] = [];
  const declare = (node: JsonState) => {
    for (const [event, transitions] of Object.entries(node.on)) {
      const label = eventLabel(event, node.invoke);
      if (transitions.some((t) => t.target?.[0]) && !events.includes(label)) events.push(label);
    }
    Object.values(node.states).forEach(declare);
  };
  declare(root);
  const arrows = new Map<string, Arrow>();
  for (const { path, node: atom, chain } of atoms) {
    // A final state of the machine itself ends it: nothing moves it any more.
    if (atom.type === 'final' && chain.length === 2) continue;
    // XState asks the state, then its ancestors; an unguarded transition ends the search for that event.
    const settled = new Set<string>();
    const ancestors = chain.map((_, i) =>
      path
        .split('.')
        .slice(0, path.split('.').length - i)
        .join('.'),
    );
    for (const [depth, node] of chain.entries()) {
      for (const [event, transitions] of Object.entries(node.on)) {
        if (settled.has(event)) continue;
        if (transitions.some((t) => !t.guard)) settled.add(event);
        const label = eventLabel(event, node.invoke);
        for (const t of transitions) {
          const target = t.target?.[0];
          if (!target) continue;
          const to = atomic(pathOf(target, id));
          const guard = nameOf(t.guard);
          const key = `${path}|${to}|${guard ?? ''}`;
          const arrow = arrows.get(key) ?? { from: path, to, guard, events: [], declaredAt: {} };
          if (!arrow.events.includes(label)) arrow.events.push(label);
          arrow.declaredAt[label] ??= ancestors[depth]!;
          arrows.set(key, arrow);
        }
      }
    }
  }
  const order = (e: string) => events.indexOf(e);
  for (const a of arrows.values()) a.events.sort((x, y) => order(x) - order(y));
  const first = root.initial?.target[0];
  const out = {
    atoms,
    compounds: compoundStates(root),
    initial: first ? atomic(pathOf(first, id)) : undefined,
    arrows: [...arrows.values()],
    events,
  };
  arrowCache.set(machine, out);
  return out;
}

const arrowLabel = (a: { events: string[]; guard: string | undefined }) =>
  `${a.events.join(', ')}${a.guard ? ` [${a.guard}]` : ''}`;

/**
 * The machine as a diagram reads best: each compound state is a box, and what it does for every state inside is
 * one arrow from the box; a rule that several other states share (the same events and guard to the same target)
 * is drawn once from a box the diagram adds around them; parallel arrows are merged; self-transitions are listed
 * in the state's box. Everything comes from the machine definition, so a restructured machine is drawn as it is.
 */
export function diagramOf(machine: AnyStateMachine): Diagram {
  const { atoms, compounds, initial, arrows, events } = allArrows(machine);
  const { nameOfPath } = stateNames(machine);
  const states = atoms.map((a) => nameOfPath(a.path));
  const finals = atoms.filter((a) => a.node.type === 'final').map((a) => nameOfPath(a.path));

  // One event of one arrow: what a box may take over from the states inside it.
  const single = arrows.flatMap((a) =>
    a.events.map((event) => ({ from: a.from, to: a.to, guard: a.guard, event, declaredAt: a.declaredAt[event] })),
  );
  const key = (to: string, guard: string | undefined, event: string) => `${to}\0${guard ?? ''}\0${event}`;
  const lifted = new Set<string>();
  const boxEdges: { box: string; to: string; guard: string | undefined; events: string[] }[] = [];
  for (const c of compounds) {
    const byRule = new Map<string, { to: string; guard: string | undefined; event: string; from: Set<string> }>();
    for (const s of single) {
      // Only what the compound state itself declares: a state's own transition stays on the state.
      if (s.declaredAt !== c.path || !c.atoms.includes(s.from)) continue;
      const k = key(s.to, s.guard, s.event);
      const rule = byRule.get(k) ?? { to: s.to, guard: s.guard, event: s.event, from: new Set<string>() };
      rule.from.add(s.from);
      byRule.set(k, rule);
    }
    for (const rule of byRule.values()) {
      // Inherited by some states only (others handle the event themselves): drawn from those states.
      if (rule.from.size !== c.atoms.length) continue;
      for (const from of rule.from) lifted.add(`${from}\0${key(rule.to, rule.guard, rule.event)}`);
      const edge = boxEdges.find((e) => e.box === c.path && e.to === rule.to && e.guard === rule.guard);
      if (edge) edge.events.push(rule.event);
      else boxEdges.push({ box: c.path, to: rule.to, guard: rule.guard, events: [rule.event] });
    }
  }
  const remaining = arrows
    .map((a) => ({ ...a, events: a.events.filter((e) => !lifted.has(`${a.from}\0${key(a.to, a.guard, e)}`)) }))
    .filter((a) => a.events.length > 0);

  const selfLoops: Record<string, string[]> = {};
  const moving = remaining.filter((a) => {
    if (a.from !== a.to) return true;
    (selfLoops[nameOfPath(a.from)] ??= []).push(arrowLabel(a));
    return false;
  });

  // The parent of each atomic state: a box of shared rules stays inside one compound state.
  const parentOf = (path: string) => (path.includes('.') ? path.slice(0, path.lastIndexOf('.')) : '');

  // Shared rules: (target, label) → the states it leaves from.
  const rules = new Map<string, { to: string; label: string; sources: Set<string> }>();
  for (const a of moving) {
    const label = arrowLabel(a);
    const k = `${a.to}\0${label}`;
    const rule = rules.get(k) ?? { to: a.to, label, sources: new Set<string>() };
    rule.sources.add(a.from);
    rules.set(k, rule);
  }
  const subset = (a: Set<string>, b: Set<string>) => [...a].every((x) => b.has(x));
  const disjoint = (a: Set<string>, b: Set<string>) => [...a].every((x) => !b.has(x));
  const accepted: { members: Set<string>; rules: { label: string; to: string }[] }[] = [];
  const candidates = [...rules.values()]
    .filter((r) => r.sources.size >= MIN_GROUP && new Set([...r.sources].map(parentOf)).size === 1)
    .sort((x, y) => y.sources.size - x.sources.size);
  for (const c of candidates) {
    const same = accepted.find((g) => g.members.size === c.sources.size && subset(c.sources, g.members));
    if (same) {
      same.rules.push({ label: c.label, to: nameOfPath(c.to) });
      continue;
    }
    // Boxes nest or stay apart; one that would cut across another is left as separate arrows.
    if (
      accepted.every(
        (g) => subset(c.sources, g.members) || subset(g.members, c.sources) || disjoint(c.sources, g.members),
      )
    ) {
      accepted.push({ members: c.sources, rules: [{ label: c.label, to: nameOfPath(c.to) }] });
    }
  }
  const grouped = new Set(
    accepted.flatMap((g) => g.rules.flatMap((r) => [...g.members].map((m) => `${m}\0${r.to}\0${r.label}`))),
  );

  // The tree of boxes: compound states as the machine nests them; each box of shared rules inside the smallest
  // box that holds it (accepted is ordered largest first).
  type Node = DiagramGroup & { members: Set<string> };
  const compoundNodes = compounds.map((c): Node => ({
    id: compoundId(c.path),
    state: nameOfCompound(c.path),
    rules: [],
    states: [],
    groups: [],
    members: new Set(c.atoms),
  }));
  const ruleNodes = accepted.map((g, i): Node => ({
    id: `group_${i + 1}`,
    rules: g.rules,
    states: [],
    groups: [],
    members: g.members,
  }));
  const nodes = [...compoundNodes, ...ruleNodes];
  const top: DiagramGroup[] = [];
  for (const [i, g] of nodes.entries()) {
    const parent = nodes
      .slice(0, i)
      .reverse()
      .find((p) => subset(g.members, p.members));
    (parent ? parent.groups : top).push(g);
  }
  const innermost = (s: string) =>
    nodes
      .slice()
      .reverse()
      .find((g) => g.members.has(s));
  for (const a of atoms) innermost(a.path)?.states.push(nameOfPath(a.path));
  const strip = (g: Node | DiagramGroup): DiagramGroup => ({
    id: g.id,
    ...(g.state !== undefined ? { state: g.state } : {}),
    rules: g.rules,
    states: g.states,
    groups: g.groups.map(strip),
  });

  const edges = new Map<string, DiagramEdge>();
  for (const a of moving) {
    if (grouped.has(`${a.from}\0${nameOfPath(a.to)}\0${arrowLabel(a)}`)) continue;
    const from = nameOfPath(a.from);
    const to = nameOfPath(a.to);
    const k = `${from}\0${to}`;
    const edge = edges.get(k) ?? { from, fromGroup: false, to, labels: [] };
    edge.labels.push(arrowLabel(a));
    edges.set(k, edge);
  }
  for (const e of boxEdges) {
    const order = (x: string) => events.indexOf(x);
    const from = compoundId(e.box);
    const to = nameOfPath(e.to);
    const edge = edges.get(`${from}\0${to}`) ?? { from, fromGroup: true, to, labels: [] };
    edge.labels.push(arrowLabel({ events: e.events.sort((x, y) => order(x) - order(y)), guard: e.guard }));
    edges.set(`${from}\0${to}`, edge);
  }
  for (const g of ruleNodes) {
    for (const to of new Set(g.rules.map((r) => r.to)))
      edges.set(`${g.id}\0${to}`, { from: g.id, fromGroup: true, to, labels: [] });
  }
  return {
    initial: initial === undefined ? undefined : nameOfPath(initial),
    states,
    finals,
    events,
    selfLoops,
    groups: top.map(strip),
    edges: [...edges.values()],
  };
}

/** A compound state's box is titled by its own key: it is drawn inside its parent's box. */
const nameOfCompound = (path: string) => path.slice(path.lastIndexOf('.') + 1);
const compoundId = (path: string) => `c_${path.replaceAll('.', '_')}`;

/** The state and event names of a machine, as its diagram and the debug endpoints give them. */
export function machineNames(machine: AnyStateMachine): { states: string[]; events: string[] } {
  const { states, events } = diagramOf(machine);
  return { states, events };
}

/** The events (as the diagram names them) that take the machine from one state to another (by name). */
export function eventsBetween(machine: AnyStateMachine, from: string, to: string): string[] {
  const { pathOfName } = stateNames(machine);
  const [fromPath, toPath] = [pathOfName(from) ?? from, pathOfName(to) ?? to];
  return allArrows(machine)
    .arrows.filter((a) => a.from === fromPath && a.to === toPath)
    .flatMap((a) => a.events);
}

/** Live counts per state: each state's label shows its count, and states holding any are marked `live`. */
export type StateCounts = Record<string, number>;

/** Mermaid node ids: prefixed, so a state called `end` or `subgraph` cannot clash with the syntax. */
const nodeId = (p: string) => `s_${p.replaceAll('.', '_')}`;
const quoted = (text: string) => `"${text.replaceAll('"', '#quot;')}"`;

/**
 * A Mermaid flowchart of the machine (see `diagramOf`), drawn as a statechart: rounded states, a dot where it
 * starts, a ringed dot where it ends, a box for each compound state and for each shared rule. A flowchart rather than a `stateDiagram`
 * because Mermaid lays out arrows from boxes and labels of parallel arrows better in it. With `counts`, every
 * state is labelled with its count and the states that hold any get the `live` class.
 */
export function toMermaid(machine: AnyStateMachine, counts?: StateCounts): string {
  const d = diagramOf(machine);
  const lines = ['flowchart TB'];
  const declare = (s: string, indent: string) => {
    const loops = (d.selfLoops[s] ?? []).map((l) => `<br>↻ ${l}`).join('');
    lines.push(`${indent}${nodeId(s)}(${quoted(`${counts ? `${s} (${counts[s] ?? 0})` : s}${loops}`)})`);
  };
  const box = (g: DiagramGroup, indent: string) => {
    const title =
      g.state !== undefined
        ? g.state
        : `from every state here: ${g.rules.map((r) => `${r.label} → ${r.to}`).join('; ')}`;
    lines.push(`${indent}subgraph ${g.id} [${quoted(title)}]`);
    for (const s of g.states) declare(s, `${indent}  `);
    for (const inner of g.groups) box(inner, `${indent}  `);
    lines.push(`${indent}end`);
  };
  const inGroups = new Set<string>();
  const collect = (g: DiagramGroup) => {
    for (const s of g.states) inGroups.add(s);
    g.groups.forEach(collect);
  };
  d.groups.forEach(collect);
  for (const s of d.states) if (!inGroups.has(s)) declare(s, '  ');
  for (const g of d.groups) box(g, '  ');
  const marks: string[] = [];
  if (d.initial) {
    lines.push(`  start__(( )) --> ${nodeId(d.initial)}`);
    marks.push('start__');
  }
  if (d.finals.length) {
    lines.push('  final__((( )))');
    for (const f of d.finals) lines.push(`  ${nodeId(f)} --> final__`);
    marks.push('final__');
  }
  for (const e of d.edges) {
    const label = e.labels.length ? `|${quoted(e.labels.join('<br>'))}|` : '';
    lines.push(`  ${e.fromGroup ? e.from : nodeId(e.from)} -->${label} ${nodeId(e.to)}`);
  }
  lines.push('  classDef mark fill:#333,stroke:#333');
  if (marks.length) lines.push(`  class ${marks.join(',')} mark`);
  if (counts) {
    const live = d.states.filter((s) => (counts[s] ?? 0) > 0);
    lines.push('  classDef live fill:#ffe9a8,stroke:#b7791f,stroke-width:2px');
    if (live.length) lines.push(`  class ${live.map(nodeId).join(',')} live`);
  }
  return `${lines.join('\n')}\n`;
}

function transitionConfig(t: JsonTransition, rootId: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const target = t.target?.[0];
  if (target) out['target'] = `#${rootId}${pathOf(target, rootId) ? `.${pathOf(target, rootId)}` : ''}`;
  const guard = nameOf(t.guard);
  if (guard) out['guard'] = guard;
  const actions = (t.actions ?? []).map((a) => nameOf(a)).filter((a): a is string => !!a);
  if (actions.length) out['actions'] = actions;
  if (t.reenter) out['reenter'] = true;
  return out;
}

function stateConfig(state: JsonState, rootId: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (state.type === 'final') out['type'] = 'final';
  if (state.description) out['description'] = state.description;
  const initial = state.initial?.target[0];
  if (initial && Object.keys(state.states).length) out['initial'] = initial.split('.').pop();
  if (state.invoke.length) {
    out['invoke'] = state.invoke.map((inv) => {
      const done = state.on[`xstate.done.actor.${inv.id}`] ?? [];
      const error = state.on[`xstate.error.actor.${inv.id}`] ?? [];
      return {
        id: inv.id,
        src: inv.src,
        ...(done.length ? { onDone: done.map((t) => transitionConfig(t, rootId)) } : {}),
        ...(error.length ? { onError: error.map((t) => transitionConfig(t, rootId)) } : {}),
      };
    });
  }
  const on: Record<string, unknown> = {};
  for (const [event, transitions] of Object.entries(state.on)) {
    if (event.startsWith('xstate.')) continue;
    on[event] = transitions.map((t) => transitionConfig(t, rootId));
  }
  if (Object.keys(on).length) out['on'] = on;
  if (Object.keys(state.states).length) {
    out['states'] = Object.fromEntries(Object.entries(state.states).map(([k, v]) => [k, stateConfig(v, rootId)]));
  }
  return out;
}

/** A `createMachine` source with every guard, action and actor by name: what Stately Studio imports. */
export function toStatelySource(machine: AnyStateMachine, exportName: string): string {
  const root = plain(machine);
  const config = { id: root.id, ...stateConfig(root, root.id) };
  return [
    '// Generated by `npm run machines` from the machine in src/machines/: do not edit.',
    '// Import into Stately Studio (Import from code) to see and explore the flow.',
    "import { createMachine } from 'xstate';",
    '',
    `export const ${exportName} = createMachine(${JSON.stringify(config, null, 2)});`,
    '',
  ].join('\n');
}
