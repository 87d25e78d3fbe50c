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
    expect(d).toMatchObject({ initial: 'a', states: ['a', 'b', 'c', 'x'], finals: ['x'], events: ['STOP', 'GO', 'PING', 'BACK'] });
    expect(d.groups).toEqual([{ id: 'group_1', rules: [{ label: 'STOP [late]', to: 'x' }], states: ['a', 'b', 'c'], groups: [] }]);
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

  it('follows a compound state: children inherit its transitions, a compound target is its initial state', () => {
    const d = diagramOf(nested);
    expect(d.states).toEqual(['p.q', 'p.r', 'z']);
    expect(d.initial).toBe('p.q');
    expect(d.groups).toEqual([]);
    expect(d.edges).toEqual([
      { from: 'p.q', fromGroup: false, to: 'p.r', labels: ['OUT [late]'] },
      { from: 'p.q', fromGroup: false, to: 'z', labels: ['OUT'] },
      { from: 'p.r', fromGroup: false, to: 'z', labels: ['OUT'] },
      { from: 'z', fromGroup: false, to: 'p.q', labels: ['IN'] },
    ]);
    expect(toMermaid(nested)).toContain('s_p_q -->|"OUT"| s_z');
  });

  it("draws the session machine's repeated rules as nested boxes, and names a send's end as the machine does", () => {
    const d = diagramOf(validationSessionMachine);
    expect(d.groups).toEqual([
      {
        id: 'group_1',
        rules: [{ label: 'SUBMIT_TOKEN, CHECK_VALIDATED, BIND [isExpired]', to: 'expired' }],
        states: ['requested', 'sendingToken'],
        groups: [
          {
            id: 'group_2',
            rules: [{ label: 'REQUEST_TOKEN [isExpired]', to: 'sendingToken' }],
            // sendFailed sends again on the same send_attempt too (isSameOrNewerSendAttempt), so the newer-attempt
            // rule is shared by two states only: drawn on each, not as a box
            states: ['tokenSent', 'sendFailed', 'locked', 'validated', 'bound'],
            groups: [],
          },
        ],
      },
    ]);
    expect(d.edges.filter((e) => e.to === 'expired').map((e) => e.from)).toEqual(['group_1']);
    expect(eventsBetween(validationSessionMachine, 'sendingToken', 'tokenSent')).toEqual(['done: sendToken']);
    expect(eventsBetween(validationSessionMachine, 'sendingToken', 'sendFailed')).toEqual(['error: sendToken']);
  });
});
