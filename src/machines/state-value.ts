/**
 * A machine's state as it is stored and as people read it.
 *
 * Stored: the snapshot's value as the machine gives it. A state nested in another is an object
 * (`{"live":"tokenSent"}`), written as JSON; a top-level state is a string and stays the plain name it always was
 * (`expired`), so rows written before a machine had nested states read as they are.
 *
 * Read by people (metrics, histories, the debug endpoints and diagrams): each atomic state by its name, the
 * shortest tail of its path that no other state of the machine ends with: `tokenSent` for `live.tokenSent` while
 * no other state is called `tokenSent`, the dotted path where it would be ambiguous.
 */
import type { AnyStateMachine, StateValue } from 'xstate';

/** A value and context as a machine version stores them. */
export interface MachineState<TContext = unknown> {
  value: StateValue;
  context: TContext;
}

/**
 * Turns what machine version n stored into what version n + 1 stores (see the machine host). A context as an
 * old version stored it has no type of its own today: a migration reads and writes plain records.
 */
export type Migration = (state: MachineState<Record<string, unknown>>) => MachineState<Record<string, unknown>>;

/** What the `state` column holds for a snapshot's value. */
export function encodeStateValue(value: StateValue): string {
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** The value a `state` column holds: JSON for a nested state, the plain name otherwise. */
export function decodeStateValue(text: string): StateValue {
  if (!text.startsWith('{') && !text.startsWith('"')) return text;
  const parsed: unknown = JSON.parse(text);
  if (!isStateValue(parsed)) throw new Error(`not a state value: ${text.slice(0, 80)}`);
  return parsed;
}

function isStateValue(x: unknown): x is StateValue {
  if (typeof x === 'string') return true;
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  return Object.values(x).every((v) => v === undefined || isStateValue(v));
}

/** The atomic states a value is in, as dotted paths below the root: `{ live: 'tokenSent' }` → `['live.tokenSent']`. */
function statePaths(value: StateValue): string[] {
  if (typeof value === 'string') return [value];
  return Object.entries(value).flatMap(([key, inner]) =>
    inner === undefined || (typeof inner === 'object' && Object.keys(inner).length === 0)
      ? [key]
      : statePaths(inner).map((p) => `${key}.${p}`),
  );
}

/**
 * The path of a value in one atomic state (no parallel states), as `statePaths` gives it, without building arrays:
 * names are read at every save and every change of state. Null for any other value.
 */
function singlePath(value: StateValue): string | null {
  let path = '';
  let node: StateValue = value;
  for (;;) {
    if (typeof node === 'string') return path + node;
    let key: string | undefined;
    for (const k in node) {
      if (key !== undefined) return null;
      key = k;
    }
    if (key === undefined) return null;
    const inner: StateValue | undefined = node[key];
    if (inner === undefined || (typeof inner === 'object' && Object.keys(inner).length === 0)) return path + key;
    path += `${key}.`;
    node = inner;
  }
}

/** The value of one atomic state's path: `live.tokenSent` → `{ live: 'tokenSent' }`. */
export function valueOfPath(path: string): StateValue {
  const [head, ...rest] = path.split('.');
  return rest.length === 0 ? head! : { [head!]: valueOfPath(rest.join('.')) };
}

export interface StateNames {
  /** every atomic state's name, in definition order */
  names: string[];
  /** the name of an atomic state's path */
  nameOfPath: (path: string) => string;
  /** the path of a name (or of a path, which is returned as it is) */
  pathOfName: (name: string) => string | undefined;
  /** how people read a value: its atomic states' names, joined by `, ` when it is in several (parallel states) */
  nameOf: (value: StateValue) => string;
}

interface StateNodeLike {
  key: string;
  type: string;
  states: Record<string, StateNodeLike>;
}

/** Atomic (and final) state paths below the root, in definition order. */
function atomicPaths(machine: AnyStateMachine): string[] {
  const walk = (node: StateNodeLike, prefix: string): string[] => {
    const kids = Object.values(node.states);
    if (kids.length === 0) return [prefix];
    return kids.flatMap((k) => walk(k, prefix ? `${prefix}.${k.key}` : k.key));
  };
  return walk(machine.root, '');
}

const namesCache = new WeakMap<AnyStateMachine, StateNames>();

export function stateNames(machine: AnyStateMachine): StateNames {
  const cached = namesCache.get(machine);
  if (cached) return cached;
  const paths = atomicPaths(machine);
  const endsWith = (path: string, tail: string) => path === tail || path.endsWith(`.${tail}`);
  const nameByPath = new Map<string, string>();
  for (const path of paths) {
    const parts = path.split('.');
    let name = path;
    for (let n = 1; n < parts.length; n++) {
      const tail = parts.slice(-n).join('.');
      if (paths.every((other) => other === path || !endsWith(other, tail))) {
        name = tail;
        break;
      }
    }
    nameByPath.set(path, name);
  }
  const pathByName = new Map([...nameByPath].map(([p, n]) => [n, p]));
  const nameOfPath = (path: string) => nameByPath.get(path) ?? path;
  const names: StateNames = {
    names: paths.map(nameOfPath),
    nameOfPath,
    pathOfName: (name) => pathByName.get(name) ?? (nameByPath.has(name) ? name : undefined),
    nameOf: (value) => {
      const path = singlePath(value);
      return path !== null ? nameOfPath(path) : statePaths(value).map(nameOfPath).join(', ');
    },
  };
  namesCache.set(machine, names);
  return names;
}
