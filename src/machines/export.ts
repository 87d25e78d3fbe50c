/**
 * Turns a machine into the three files developers look at: its JSON (`machine.toJSON()`), a Mermaid
 * `stateDiagram-v2`, and a `createMachine({...})` source Stately Studio imports. Generated from the machine
 * itself, so a test can tell when the committed files are stale.
 */
import type { AnyStateMachine } from 'xstate';

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

function atomicStates(state: JsonState, prefix = ''): { path: string; node: JsonState }[] {
  const kids = Object.values(state.states);
  if (kids.length === 0) return [{ path: prefix, node: state }];
  return kids.flatMap((k) => atomicStates(k, prefix ? `${prefix}.${k.key}` : k.key));
}

/**
 * The diagram shows transitions that change state; transitions that stay put (rejections, bookkeeping) are in
 * the JSON and the Stately file. Transitions declared on the machine itself apply to every state that does not
 * handle the event, and are drawn from each of them.
 */
export function toMermaid(machine: AnyStateMachine): string {
  const root = plain(machine);
  const id = root.id;
  const mermaidId = (p: string) => p.replaceAll('.', '_');
  const lines = ['stateDiagram-v2'];
  const initial = root.initial?.target[0];
  if (initial) lines.push(`  [*] --> ${mermaidId(pathOf(initial, id))}`);
  // One arrow per (from, to, guard), listing its events: the diagram stays readable.
  const edges = new Map<string, { from: string; to: string; guard: string | undefined; events: string[] }>();
  for (const { path, node } of atomicStates(root)) {
    if (node.type === 'final') lines.push(`  ${mermaidId(path)} --> [*]`);
    const own = node.on;
    const inherited = Object.fromEntries(Object.entries(root.on).filter(([event]) => !(event in own)));
    for (const [event, transitions] of Object.entries({ ...inherited, ...own })) {
      for (const t of transitions) {
        const target = t.target?.[0];
        if (!target) continue;
        const to = pathOf(target, id);
        const guard = nameOf(t.guard);
        const key = `${path}|${to}|${guard ?? ''}`;
        const edge = edges.get(key) ?? { from: path, to, guard, events: [] };
        const label = eventLabel(event, node.invoke);
        if (!edge.events.includes(label)) edge.events.push(label);
        edges.set(key, edge);
      }
    }
  }
  for (const e of edges.values()) {
    lines.push(`  ${mermaidId(e.from)} --> ${mermaidId(e.to)} : ${e.events.join(', ')}${e.guard ? ` [${e.guard}]` : ''}`);
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
