import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createActor, fromPromise, transition, type StateValue } from 'xstate';
import { getShortestPaths, getSimplePaths } from 'xstate/graph';
import {
  MAX_WRONG_TOKENS,
  SESSION_LIFETIME_MS,
  SESSION_STATES,
  sameSecret,
  validationSessionMachine,
  type SendTokenInput,
  type SessionEvent,
} from '../src/machines/validation-session.js';
import { stateNames } from '../src/machines/state-value.js';
import { machineFiles } from '../scripts/machines.js';
import { ROOT } from './helpers/process.js';

const T0 = 1_000_000;
const LATE = T0 + SESSION_LIFETIME_MS + 1;
const DONE = 'xstate.done.actor.sendToken';
const ERROR = 'xstate.error.actor.sendToken';

// The send never settles by itself: tests deliver its done/error events, as the invoked actor would.
const machine = validationSessionMachine.provide({
  actors: { sendToken: fromPromise<void, SendTokenInput>(() => new Promise<void>(() => undefined)) },
});

const input = {
  sid: '42',
  medium: 'email' as const,
  address: 'alice@example.com',
  sendTo: 'Alice@example.com',
  clientSecret: 'secret',
  token: 'tok1',
  sendAttempt: -1,
  mtime: T0,
  nextLink: null,
  brand: null,
  ipAddress: null,
};

const request = (sendAttempt: number, now = T0): SessionEvent => ({
  type: 'REQUEST_TOKEN',
  clientSecret: 'secret',
  sendAttempt,
  nextLink: null,
  brand: null,
  sendTo: 'Alice@example.com',
  ipAddress: '127.0.0.1',
  freshToken: 'tok2',
  now,
});
const submit = (token: string, clientSecret = 'secret', now = T0): SessionEvent => ({
  type: 'SUBMIT_TOKEN',
  token,
  clientSecret,
  now,
});
const check = (clientSecret = 'secret', now = T0): SessionEvent => ({ type: 'CHECK_VALIDATED', clientSecret, now });
const bind = (mxid = '@alice:hs', clientSecret = 'secret', now = T0): SessionEvent => ({
  type: 'BIND',
  mxid,
  clientSecret,
  now,
});

type AnyEvent = SessionEvent | { type: string; error?: unknown };
const EVENTS: AnyEvent[] = [
  request(1),
  request(2),
  request(1, LATE),
  { type: DONE },
  { type: ERROR, error: new Error('smtp down') },
  submit('tok1'),
  submit('wrong'),
  submit('tok1', 'other'),
  submit('tok1', 'secret', LATE),
  check(),
  check('other'),
  bind(),
  bind('@bob:hs'),
  bind('@alice:hs', 'secret', LATE),
];

/** A state by name, as the diagram and the debug endpoints give it (`tokenSent` for `{ live: 'tokenSent' }`). */
const name = (s: { value: StateValue }) => stateNames(machine).nameOf(s.value);

function replay(events: AnyEvent[]) {
  const actor = createActor(machine, { input });
  actor.start();
  for (const e of events) actor.send(e as SessionEvent);
  return actor.getSnapshot();
}

describe('validation session machine: every state by its shortest path', () => {
  // The wrong-token count is part of a state here: `locked` is only reached by counting up to the cap.
  const paths = getShortestPaths(machine, {
    input,
    events: EVENTS as SessionEvent[],
    serializeState: (s) => `${name(s)}:${s.context.wrongTokens}`,
  });

  it('reaches every state', () => {
    expect(new Set(paths.map((p) => name(p.state)))).toEqual(new Set(SESSION_STATES));
  });

  for (const p of paths) {
    const events = p.steps.map((s) => s.event);
    it(`${name(p.state)} via ${events.map((e) => e.type).join(' → ') || '(start)'}`, () => {
      const snap = replay(events);
      expect(snap.value).toEqual(p.state.value);
      const c = snap.context;
      switch (name(snap)) {
        case 'validated':
          expect(c.validatedAt).not.toBeNull();
          expect(c.rejection).toBeNull();
          break;
        case 'bound':
          expect(c.mxid).not.toBeNull();
          expect(c.validatedAt).not.toBeNull();
          break;
        case 'sendFailed':
          expect(c.lastError).toContain('smtp down');
          break;
        case 'expired':
          expect(c.rejection).toBe('expired');
          break;
        case 'locked':
          expect(c.wrongTokens).toBe(MAX_WRONG_TOKENS);
          expect(c.validatedAt).toBeNull();
          break;
        default:
          break;
      }
    });
  }
});

describe('validation session machine: no path validates without the token', () => {
  it('every simple path into validated submits the right token with the right secret, in time', () => {
    const paths = getSimplePaths(machine, {
      input,
      events: EVENTS as SessionEvent[],
      serializeState: (s) => name(s),
      toState: (s) => s.matches({ live: 'validated' }),
    });
    expect(paths.length).toBeGreaterThan(0);
    for (const p of paths) {
      const last = p.steps.at(-1)!.event as SessionEvent;
      expect(last).toEqual(submit('tok1'));
    }
  });
});

describe('validation session machine: rules', () => {
  it('a repeated send_attempt sends nothing; a greater one sends again', () => {
    let s = replay([request(1), { type: DONE }]);
    expect(name(s)).toBe('tokenSent');
    const [same] = transition(machine, s, request(1));
    expect(name(same)).toBe('tokenSent');
    const [older] = transition(machine, s, request(0));
    expect(name(older)).toBe('tokenSent');
    const [newer] = transition(machine, s, request(2));
    expect(name(newer)).toBe('sendingToken');
    s = replay([request(3), { type: DONE }]);
    expect(s.context.sendAttempt).toBe(3);
  });

  it('refuses a wrong token or secret and says which', () => {
    const sent = replay([request(1), { type: DONE }]);
    const [wrongToken] = transition(machine, sent, submit('nope'));
    expect(name(wrongToken)).toBe('tokenSent');
    expect(wrongToken.context.rejection).toBe('tokenIncorrect');
    const [wrongSecret] = transition(machine, sent, submit('tok1', 'other'));
    expect(wrongSecret.context.rejection).toBe('secretMismatch');
    const [notYet] = transition(machine, sent, check());
    expect(notYet.context.rejection).toBe('notValidated');
  });

  it('compares secrets by every code unit: two that differ only in an unpaired surrogate are different', () => {
    expect(sameSecret('tok1', 'tok1')).toBe(true);
    expect(sameSecret('tok1', 'tok2')).toBe(false);
    expect(sameSecret('tok1', 'tok10')).toBe(false);
    expect(sameSecret('tok\uD800', 'tok\uDBFF')).toBe(false);
  });

  it('expires 24 h after the last change, and a new request revives it with a fresh token', () => {
    const sent = replay([request(1), { type: DONE }]);
    const [justInTime] = transition(machine, sent, submit('tok1', 'secret', T0 + SESSION_LIFETIME_MS));
    expect(name(justInTime)).toBe('validated');
    const [late] = transition(machine, sent, submit('tok1', 'secret', LATE));
    expect(name(late)).toBe('expired');
    const [revived] = transition(machine, late, request(1, LATE));
    expect(name(revived)).toBe('sendingToken');
    expect(revived.context.token).toBe('tok2');
    expect(revived.context.validatedAt).toBeNull();
  });

  it('validation moves the expiry on, and binding works only while the session lives', () => {
    const validated = replay([request(1), { type: DONE }, submit('tok1', 'secret', T0 + 1000)]);
    expect(validated.context.mtime).toBe(T0 + 1000);
    const [bound] = transition(machine, validated, bind('@alice:hs', 'secret', T0 + SESSION_LIFETIME_MS));
    expect(name(bound)).toBe('bound');
    const [late] = transition(machine, validated, bind('@alice:hs', 'secret', T0 + 1000 + SESSION_LIFETIME_MS + 1));
    expect(name(late)).toBe('expired');
  });

  it(`${MAX_WRONG_TOKENS} wrong tokens lock the session: even the right one is refused until a higher send_attempt sends a new token`, () => {
    let s = replay([request(1), { type: DONE }]);
    for (let i = 1; i < MAX_WRONG_TOKENS; i++) {
      [s] = transition(machine, s, submit(`wrong${i}`));
      expect(name(s)).toBe('tokenSent');
      expect(s.context).toMatchObject({ wrongTokens: i, rejection: 'tokenIncorrect' });
    }
    [s] = transition(machine, s, submit('wrong-last'));
    expect(name(s)).toBe('locked');
    expect(s.context).toMatchObject({ wrongTokens: MAX_WRONG_TOKENS, rejection: 'tokenIncorrect' });
    const [right] = transition(machine, s, submit('tok1'));
    expect(name(right)).toBe('locked');
    expect(right.context).toMatchObject({ rejection: 'tokenLocked', validatedAt: null });
    const [otherSecret] = transition(machine, s, submit('tok1', 'other'));
    expect(otherSecret.context.rejection).toBe('secretMismatch');
    const [notYet] = transition(machine, s, check());
    expect(notYet.context.rejection).toBe('notValidated');
    // The same send_attempt again sends nothing, so the token stays void.
    const [same] = transition(machine, s, request(1));
    expect(name(same)).toBe('locked');
    const [renewed] = transition(machine, s, request(2));
    expect(name(renewed)).toBe('sendingToken');
    expect(renewed.context).toMatchObject({ token: 'tok2', wrongTokens: 0, rejection: null });
    const [sent] = transition(machine, renewed, { type: DONE } as unknown as SessionEvent);
    const [old] = transition(machine, sent, submit('tok1'));
    expect(name(old)).toBe('tokenSent');
    expect(old.context).toMatchObject({ rejection: 'tokenIncorrect', wrongTokens: 1 });
    const [ok] = transition(machine, old, submit('tok2'));
    expect(name(ok)).toBe('validated');
  });

  it('a resend of the same token keeps its count; a failed renewal does not make the new token valid', () => {
    const s = replay([
      request(1),
      { type: DONE },
      ...Array.from({ length: MAX_WRONG_TOKENS - 1 }, () => submit('nope')),
      request(2),
      { type: DONE },
    ]);
    expect(name(s)).toBe('tokenSent');
    expect(s.context).toMatchObject({ token: 'tok1', wrongTokens: MAX_WRONG_TOKENS - 1 });
    const [locked] = transition(machine, s, submit('nope'));
    expect(name(locked)).toBe('locked');

    const failed = replay([
      request(1),
      { type: DONE },
      ...Array.from({ length: MAX_WRONG_TOKENS }, () => submit('nope')),
      request(2),
      { type: ERROR, error: new Error('smtp down') },
    ]);
    expect(name(failed)).toBe('sendFailed');
    for (const token of ['tok1', 'tok2']) {
      const [refused] = transition(machine, failed, submit(token));
      expect(name(refused), token).toBe('sendFailed');
      expect(refused.context.rejection).toBe('tokenIncorrect');
    }
  });

  it('wrong tokens count after a failed send too, and a revived session starts from none', () => {
    let s = replay([request(1), { type: DONE }, request(2), { type: ERROR, error: new Error('x') }]);
    for (let i = 0; i < MAX_WRONG_TOKENS; i++) [s] = transition(machine, s, submit('nope'));
    expect(name(s)).toBe('locked');
    const [revived] = transition(machine, s, request(1, LATE));
    expect(name(revived)).toBe('sendingToken');
    expect(revived.context).toMatchObject({ token: 'tok2', wrongTokens: 0 });
  });

  it('after a failed send, the same send_attempt (or a greater one) sends again; an older one answers the failure', () => {
    const failed = replay([request(2), { type: ERROR, error: new Error('smtp down') }]);
    expect(name(failed)).toBe('sendFailed');
    const [same] = transition(machine, failed, request(2));
    expect(name(same)).toBe('sendingToken');
    expect(same.context.rejection).toBeNull();
    const [newer] = transition(machine, failed, request(3));
    expect(name(newer)).toBe('sendingToken');
    expect(newer.context.sendAttempt).toBe(3);
    const [older] = transition(machine, failed, request(1));
    expect(name(older)).toBe('sendFailed');
    expect(older.context.rejection).toBe('sendFailed');
    expect(older.context.sendAttempt).toBe(2);
  });

  it('a failed send keeps the token of an earlier successful one valid', () => {
    const failedAfterSent = replay([request(1), { type: DONE }, request(2), { type: ERROR, error: new Error('x') }]);
    expect(name(failedAfterSent)).toBe('sendFailed');
    const [ok] = transition(machine, failedAfterSent, submit('tok1'));
    expect(name(ok)).toBe('validated');
    const neverSent = replay([request(1), { type: ERROR, error: new Error('x') }]);
    const [refused] = transition(machine, neverSent, submit('tok1'));
    expect(name(refused)).toBe('sendFailed');
    expect(refused.context.rejection).toBe('tokenIncorrect');
  });

  it('a send that ends after the session was taken for one a restart cut short (another node read it meanwhile) counts as sent', () => {
    // what a restore makes of a session whose row says sendingToken, with an event taken on it (another node's read)
    const interrupted = machine.resolveState({
      value: { live: { awaitingToken: 'sendFailed' } },
      context: {
        ...replay([request(1)]).context,
        everSent: true,
        lastError: 'interrupted by a restart',
        rejection: 'notValidated',
      },
    });
    const [sent] = transition(machine, interrupted, { type: DONE } as unknown as SessionEvent);
    expect(name(sent)).toBe('tokenSent');
    expect(sent.context).toMatchObject({ everSent: true, lastError: null, rejection: null });
    // a send that failed stays failed
    const [failed] = transition(machine, interrupted, {
      type: ERROR,
      error: new Error('x'),
    } as unknown as SessionEvent);
    expect(name(failed)).toBe('sendFailed');
  });
});

describe('docs/machines', () => {
  it('is up to date (run `npm run machines` after changing a machine)', () => {
    for (const [file, text] of Object.entries(machineFiles())) {
      const onDisk = fs.readFileSync(path.join(ROOT, 'docs/machines', file), 'utf8');
      expect(onDisk, `docs/machines/${file} is stale`).toBe(text);
    }
  });

  it('the Stately file is a machine with the same states and transitions', async () => {
    const mod = (await import('../docs/machines/validation-session.stately.js')) as unknown as {
      validationSessionMachine: typeof validationSessionMachine;
    };
    type Node = { states: Record<string, Node>; ownEvents: string[] };
    const events = (n: Node) => [...n.ownEvents].filter((e) => !e.startsWith('xstate.')).sort();
    const compare = (imported: Node, ours: Node, at: string) => {
      expect(Object.keys(imported.states).sort(), at).toEqual(Object.keys(ours.states).sort());
      expect(events(imported), at).toEqual(events(ours));
      for (const [key, node] of Object.entries(ours.states)) compare(imported.states[key]!, node, `${at}.${key}`);
    };
    compare(mod.validationSessionMachine.root, validationSessionMachine.root, 'validationSession');
  });
});
