import { describe, expect, it } from 'vitest';
import { createActor, fromPromise, transition } from 'xstate';
import { getShortestPaths } from 'xstate/graph';
import {
  BACKOFF_BASE_MS,
  BACKOFF_CAP_MS,
  BACKOFF_JITTER,
  CALLBACK_STATES,
  backoffMs,
  callbackMachine,
  type CallbackEvent,
  type CallbackInput,
  type DeliverInput,
  type DeliveryResult,
} from '../src/machines/callback.js';

const T0 = 1_000_000;
const HOUR = 60 * 60 * 1000;
const DONE = 'xstate.done.actor.deliver';
const ERROR = 'xstate.error.actor.deliver';

// The delivery never settles by itself: tests deliver its done/error events, as the invoked actor would.
const machine = callbackMachine.provide({
  actors: { deliver: fromPromise<DeliveryResult, DeliverInput>(() => new Promise<DeliveryResult>(() => undefined)) },
});

const valid: CallbackInput = {
  id: 1,
  destination: 'hs.example.org:8448',
  attempts: 0,
  nextAttemptTs: T0,
  lastError: null,
};
const invalid: CallbackInput = { ...valid, destination: 'not a server name' };

type AnyEvent = CallbackEvent | { type: string; output?: DeliveryResult; error?: unknown };
const deliver = (now = T0, jitter = 0): CallbackEvent => ({ type: 'DELIVER', now, jitter });
const answered = (status: number, at = T0 + 10): AnyEvent => ({ type: DONE, output: { status, at } });
const failed = (message = 'connection refused', at = T0 + 10): AnyEvent => ({ type: ERROR, error: { message, at } });

const EVENTS: AnyEvent[] = [
  deliver(),
  deliver(T0 + HOUR, 0.5),
  answered(200),
  answered(500),
  answered(302),
  failed(),
  { type: 'RELEASE' },
];

function replay(input: CallbackInput, events: AnyEvent[]) {
  const actor = createActor(machine, { input });
  actor.start();
  for (const e of events) actor.send(e as CallbackEvent);
  const snap = actor.getSnapshot();
  actor.stop();
  return snap;
}

describe('callback machine: every state by its shortest path', () => {
  const paths = [valid, invalid].flatMap((input) =>
    getShortestPaths(machine, {
      input,
      events: EVENTS as CallbackEvent[],
      serializeState: (s) => String(s.value),
    }).map((p) => ({ input, p })),
  );

  it('reaches every state', () => {
    expect(new Set(paths.map(({ p }) => String(p.state.value)))).toEqual(new Set(CALLBACK_STATES));
  });

  for (const { input, p } of paths) {
    const events = p.steps.map((s) => s.event);
    it(`${input.destination}: ${String(p.state.value)} via ${events.map((e) => e.type).join(' → ') || '(start)'}`, () => {
      const snap = replay(input, events);
      expect(snap.value).toEqual(p.state.value);
      const c = snap.context;
      switch (snap.value) {
        case 'delivered':
          expect(snap.status).toBe('done');
          expect(c.outcome).toBe('delivered');
          expect(c.lastStatus).toBe(200);
          expect(c.deliveredAt).toBe(T0 + 10);
          break;
        case 'retrying':
          expect(c.outcome).toBe('failed');
          expect(c.attempts).toBe(1);
          expect(c.nextAttemptTs).toBe(T0 + 10 + BACKOFF_BASE_MS);
          break;
        case 'abandoned':
          expect(snap.status).toBe('done');
          expect(c.outcome).toBe('abandoned');
          expect(c.lastError).toContain('not a valid Matrix server name');
          break;
        case 'delivering':
          expect(c.outcome).toBeNull();
          expect(c.startedAt).toBe(T0);
          break;
        default:
          break;
      }
    });
  }
});

describe('callback machine: rules', () => {
  it('only status 200 is success: other 2xx, 3xx, 4xx and 5xx are retried', () => {
    const delivering = replay(valid, [deliver()]);
    expect(delivering.value).toBe('delivering');
    for (const status of [201, 202, 204, 301, 302, 400, 403, 404, 500, 502]) {
      const [next] = transition(machine, delivering, answered(status) as CallbackEvent);
      expect(next.value, String(status)).toBe('retrying');
      expect(next.context.lastError).toBe(`HTTP ${status}`);
      expect(next.context.lastStatus).toBe(status);
    }
    const [ok] = transition(machine, delivering, answered(200) as CallbackEvent);
    expect(ok.value).toBe('delivered');
  });

  it('a transport failure is retried and says why', () => {
    const s = replay(valid, [deliver(), failed('Unable to contact the Matrix homeserver x: refused', T0 + 50)]);
    expect(s.value).toBe('retrying');
    expect(s.context.lastError).toBe('Unable to contact the Matrix homeserver x: refused');
    expect(s.context.lastStatus).toBeNull();
    expect(s.context.nextAttemptTs).toBe(T0 + 50 + 1000);
  });

  it('an error without a time backs off from the start of the attempt', () => {
    const s = replay(valid, [deliver(T0 + 5), { type: ERROR, error: new Error('boom') }]);
    expect(s.context.nextAttemptTs).toBe(T0 + 5 + 1000);
    expect(s.context.lastError).toBe('boom');
  });

  it('retries only when due', () => {
    const retrying = replay(valid, [deliver(), answered(500, T0)]);
    expect(retrying.context.nextAttemptTs).toBe(T0 + 1000);
    const [early] = transition(machine, retrying, deliver(T0 + 999));
    expect(early.value).toBe('retrying');
    const [due] = transition(machine, retrying, deliver(T0 + 1000));
    expect(due.value).toBe('delivering');
  });

  it('a release gives the row back without counting the attempt', () => {
    const first = replay(valid, [deliver(), { type: 'RELEASE' }]);
    expect(first.value).toBe('pending');
    expect(first.context.outcome).toBe('released');
    expect(first.context.attempts).toBe(0);
    const later = replay(valid, [deliver(), answered(500, T0), deliver(T0 + HOUR), { type: 'RELEASE' }]);
    expect(later.value).toBe('retrying');
    expect(later.context.attempts).toBe(1);
  });

  it('a row restored in retrying continues from its stored attempts', () => {
    const restored = callbackMachine.resolveState({
      value: 'retrying',
      context: {
        ...valid,
        attempts: 5,
        nextAttemptTs: T0,
        lastStatus: null,
        startedAt: null,
        jitter: 0,
        deliveredAt: null,
        outcome: null,
      },
    });
    const [delivering] = transition(machine, restored, deliver(T0));
    const [next] = transition(machine, delivering, answered(503, T0) as CallbackEvent);
    expect(next.context.attempts).toBe(6);
    expect(next.context.nextAttemptTs).toBe(T0 + 32_000);
  });
});

describe('callback machine: backoff', () => {
  it('doubles from 1 s and stops at 1 h', () => {
    expect([0, 1, 2, 3, 4].map((a) => backoffMs(a, 0))).toEqual([1000, 2000, 4000, 8000, 16000]);
    expect(backoffMs(11, 0)).toBe(2_048_000);
    expect(backoffMs(12, 0)).toBe(BACKOFF_CAP_MS);
    expect(backoffMs(100, 0)).toBe(BACKOFF_CAP_MS);
    expect(backoffMs(10_000, 0)).toBe(BACKOFF_CAP_MS);
  });

  it('jitter only shortens a delay, by at most 25 %', () => {
    for (const attempts of [0, 3, 11, 12, 50]) {
      const nominal = backoffMs(attempts, 0);
      for (const jitter of [0, 0.1, 0.5, 0.999]) {
        const d = backoffMs(attempts, jitter);
        expect(d).toBeLessThanOrEqual(nominal);
        expect(d).toBeGreaterThanOrEqual(Math.floor(nominal * (1 - BACKOFF_JITTER)));
      }
    }
    expect(backoffMs(12, 0.999)).toBeLessThan(BACKOFF_CAP_MS);
    // out-of-range randoms are clamped
    expect(backoffMs(0, -1)).toBe(1000);
    expect(backoffMs(0, Number.NaN)).toBe(1000);
    expect(backoffMs(0, 2)).toBe(750);
  });

  it('the machine grows the delay with each failure, up to the cap, from the jitter in the DELIVER event', () => {
    let snap = replay(valid, []);
    let now = T0;
    const delays: number[] = [];
    for (let i = 0; i < 16; i++) {
      [snap] = transition(machine, snap, deliver(now, 0));
      [snap] = transition(machine, snap, answered(500, now) as CallbackEvent);
      delays.push(snap.context.nextAttemptTs - now);
      now = snap.context.nextAttemptTs;
    }
    expect(delays.slice(0, 13)).toEqual([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600].map((s) => s * 1000));
    expect(delays.slice(13)).toEqual([BACKOFF_CAP_MS, BACKOFF_CAP_MS, BACKOFF_CAP_MS]);
    expect(snap.context.attempts).toBe(16);

    [snap] = transition(machine, snap, deliver(now, 0.5));
    [snap] = transition(machine, snap, answered(500, now) as CallbackEvent);
    expect(snap.context.nextAttemptTs - now).toBe(BACKOFF_CAP_MS * (1 - BACKOFF_JITTER * 0.5));
  });
});

describe('docs/machines/callback.stately.ts', () => {
  it('is a machine with the same states and transitions', async () => {
    const mod = (await import('../docs/machines/callback.stately.js')) as unknown as {
      callbackMachine: typeof callbackMachine;
    };
    const imported = mod.callbackMachine;
    expect(Object.keys(imported.states).sort()).toEqual(Object.keys(callbackMachine.states).sort());
    for (const [name, node] of Object.entries(callbackMachine.states)) {
      const events = (n: typeof node) => [...n.ownEvents].filter((e) => !e.startsWith('xstate.')).sort();
      expect(events(imported.states[name]!), name).toEqual(events(node));
    }
  });
});
