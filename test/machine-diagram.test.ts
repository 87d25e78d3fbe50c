import { setup } from 'xstate';
import { describe, expect, it } from 'vitest';
import { diagramOf, eventsBetween, toMermaid } from '../src/machines/export.js';
import { validationSessionMachine } from '../src/machines/validation-session.js';

const guards = { late: () => false, ok: () => true };

/** a, b, c share a rule declared on the machine; b has two arrows to c and one back to itself; x ends it. */
const flat = setup({ guards }).createMachine({
  id: 'flat',
  initial: 'a',
  on: { STOP: { guard: 'late', target: '.x' } },
  states: {
    a: { on: { GO: 'b' } },
    b: { on: { GO: [{ guard: 'ok', target: 'c' }, { target: 'c' }], PING: { target: 'b', reenter: true } } },
    c: { on: { BACK: 'a' } },
    x: { type: 'final' },
  },
});

/** A compound state: its children inherit its transitions, a guarded child handler does not hide them. */
const nested = setup({ guards }).createMachine({
  id: 'nested',
  initial: 'p',
  states: {
    p: {
      initial: 'q',
      on: { OUT: 'z' },
      states: { q: { on: { OUT: { guard: 'late', target: 'r' } } }, r: {} },
    },
    z: { on: { IN: 'p' } },
  },
});

describe('machine diagrams', () => {
  it('draws a rule several states share once, from a box around them; merges parallel arrows; lists self-transitions in the state', () => {
    const d = diagramOf(flat);
    expect(d).toMatchObject({
      initial: 'a',
      states: ['a', 'b', 'c', 'x'],
      finals: ['x'],
      events: ['STOP', 'GO', 'PING', 'BACK'],
    });
    expect(d.groups).toEqual([
      { id: 'group_1', rules: [{ label: 'STOP [late]', to: 'x' }], states: ['a', 'b', 'c'], groups: [] },
    ]);
    expect(d.selfLoops).toEqual({ b: ['PING'] });
    expect(d.edges).toEqual([
      { from: 'a', fromGroup: false, to: 'b', labels: ['GO'] },
      { from: 'b', fromGroup: false, to: 'c', labels: ['GO [ok]', 'GO'] },
      { from: 'c', fromGroup: false, to: 'a', labels: ['BACK'] },
      { from: 'group_1', fromGroup: true, to: 'x', labels: [] },
    ]);

    const text = toMermaid(flat, { b: 2 });
    expect(text).toContain('subgraph group_1 ["from every state here: STOP [late] → x"]');
    expect(text).toContain('group_1 --> s_x');
    expect(text).toContain('s_b -->|"GO [ok]<br>GO"| s_c');
    expect(text).toContain('s_b("b (2)<br>↻ PING")');
    expect(text).toContain('s_a("a (0)")');
    expect(text).toContain('s_x --> final__');
    expect(text).toContain('class s_b live');
    expect(toMermaid(flat)).not.toContain('live');
  });

  it('draws a compound state as a box: what it does for every state inside is one arrow from the box; states by their names', () => {
    const d = diagramOf(nested);
    // q, r and z are unique, so they are named without their parent (a dotted path only where a name repeats).
    expect(d.states).toEqual(['q', 'r', 'z']);
    expect(d.initial).toBe('q');
    expect(d.groups).toEqual([{ id: 'c_p', state: 'p', rules: [], states: ['q', 'r'], groups: [] }]);
    expect(d.edges).toEqual([
      { from: 'q', fromGroup: false, to: 'r', labels: ['OUT [late]'] },
      { from: 'z', fromGroup: false, to: 'q', labels: ['IN'] },
      { from: 'c_p', fromGroup: true, to: 'z', labels: ['OUT'] },
    ]);
    const text = toMermaid(nested);
    expect(text).toContain('subgraph c_p ["p"]');
    expect(text).toContain('c_p -->|"OUT"| s_z');
    expect(text).toContain('s_q -->|"OUT [late]"| s_r');
  });

  it('a name that would repeat keeps its path; a transition some states of a box override stays on the others', () => {
    const twice = setup({ guards }).createMachine({
      id: 'twice',
      initial: 'a',
      states: {
        a: { initial: 'x', on: { OUT: 'b' }, states: { x: { on: { OUT: 'y' } }, y: {} } },
        b: { initial: 'x', states: { x: { on: { BACK: '#twice.a' } } } },
      },
    });
    const d = diagramOf(twice);
    expect(d.states).toEqual(['a.x', 'y', 'b.x']);
    expect(d.edges).toEqual([
      { from: 'a.x', fromGroup: false, to: 'y', labels: ['OUT'] },
      { from: 'y', fromGroup: false, to: 'b.x', labels: ['OUT'] },
      { from: 'b.x', fromGroup: false, to: 'a.x', labels: ['BACK'] },
    ]);
    expect(toMermaid(twice)).toContain('s_a_x -->|"OUT"| s_y');
  });

  it('draws the session machine as a statechart: the live states in one box, one guarded arrow to expired, shared rules once', () => {
    const d = diagramOf(validationSessionMachine);
    expect(d.groups).toEqual([
      {
        id: 'c_live',
        state: 'live',
        rules: [],
        states: ['requested', 'sendingToken', 'locked', 'validated', 'bound'],
        groups: [
          {
            id: 'c_live_awaitingToken',
            state: 'awaitingToken',
            rules: [],
            states: ['tokenSent', 'sendFailed'],
            groups: [],
          },
        ],
      },
    ]);
    // What both states awaiting a token do with one is drawn once, from their box.
    expect(d.edges.filter((e) => e.from === 'c_live_awaitingToken')).toEqual([
      {
        from: 'c_live_awaitingToken',
        fromGroup: true,
        to: 'validated',
        labels: ['SUBMIT_TOKEN.ok [sentTokenMatches]'],
      },
      {
        from: 'c_live_awaitingToken',
        fromGroup: true,
        to: 'locked',
        labels: ['SUBMIT_TOKEN.ok [reachesWrongTokenCap]'],
      },
    ]);
    // Expiry is one arrow, from the box, whatever the event; nothing else leads to expired.
    expect(d.edges.filter((e) => e.to === 'expired')).toEqual([
      {
        from: 'c_live',
        fromGroup: true,
        to: 'expired',
        labels: ['REQUEST_TOKEN, SUBMIT_TOKEN, CHECK_VALIDATED, BIND [isExpired]'],
      },
    ]);
    expect(d.edges.flatMap((e) => e.labels).filter((l) => l.includes('isExpired'))).toHaveLength(1);
    expect(d.edges.find((e) => e.from === 'expired')).toEqual({
      from: 'expired',
      fromGroup: false,
      to: 'sendingToken',
      labels: ['REQUEST_TOKEN'],
    });
    expect(eventsBetween(validationSessionMachine, 'sendingToken', 'tokenSent')).toEqual(['done: sendToken']);
    expect(eventsBetween(validationSessionMachine, 'sendingToken', 'sendFailed')).toEqual(['error: sendToken']);
  });
});
