/** How stored state values read as names: nested, top-level, and parallel states. */
import { describe, expect, it } from 'vitest';
import { createMachine } from 'xstate';
import { decodeStateValue, encodeStateValue, stateNames } from '../src/machines/state-value.js';

const machine = createMachine({
  id: 'm',
  initial: 'a',
  states: {
    a: { initial: 'x', states: { x: {}, y: { initial: 'deep', states: { deep: {} } } } },
    b: {
      type: 'parallel',
      states: { left: { initial: 'x', states: { x: {} } }, right: { initial: 'z', states: { z: {} } } },
    },
    z: {},
  },
});

describe('state names', () => {
  const names = stateNames(machine);

  it('names each atomic state by the shortest tail of its path no other state ends with', () => {
    expect(names.names).toEqual(['a.x', 'deep', 'left.x', 'right.z', 'z']);
    expect(names.nameOf({ a: 'x' })).toBe('a.x');
    expect(names.nameOf({ a: { y: 'deep' } })).toBe('deep');
    expect(names.nameOf('z')).toBe('z');
    // a value whose innermost state is given as an empty object, as xstate gives a compound state entered no deeper
    expect(names.nameOf({ a: {} })).toBe('a');
    expect(names.nameOf({ a: { y: {} } })).toBe('a.y');
  });

  it('names a value in parallel states by each of them, joined', () => {
    expect(names.nameOf({ b: { left: 'x', right: 'z' } })).toBe('left.x, right.z');
  });

  it('stores a nested value as JSON and a top-level one as its plain name, and reads both back', () => {
    for (const value of ['z', { a: 'x' }, { a: { y: 'deep' } }, { b: { left: 'x', right: 'z' } }]) {
      expect(decodeStateValue(encodeStateValue(value))).toEqual(value);
    }
    expect(encodeStateValue('z')).toBe('z');
  });
});
