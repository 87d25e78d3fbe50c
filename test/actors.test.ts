import { describe, expect, it } from 'vitest';
import { createActor, fromCallback, setup } from 'xstate';
import { ActorStoppedError, ask, AskTimeoutError } from '../src/actors/ask.js';
import { DeadlineExceededError, repliesOf } from '../src/actors/replies.js';
import { RequestContext } from '../src/actors/request-context.js';
import {
  supervisor,
  SupervisorClosedError,
  UnknownRequestError,
  type Handlers,
  type SupervisorStats,
} from '../src/actors/supervisor.js';
import { startTestServer } from './helpers/server.js';
import { SUPERVISOR_IDS } from './helpers/supervisors.js';

type Payload = Record<string, unknown>;

function startSupervisor(log: string[], handlers: Handlers<{ name: string }>) {
  const logic = supervisor('test', {
    concurrency: 1,
    open: () => ({ name: 'resource' }),
    close: () => {
      log.push('closed');
    },
    handlers,
  });
  const actor = createActor(logic, { input: undefined });
  actor.start();
  return actor;
}

describe('ask', () => {
  it('resolves with the handler result and rejects with its error', async () => {
    const actor = startSupervisor([], {
      ADD: (e: Payload) => (e['a'] as number) + (e['b'] as number),
      FAIL: () => {
        throw new Error('boom');
      },
    });
    await expect(ask(actor, 'ADD', { a: 2, b: 3 })).resolves.toBe(5);
    await expect(ask(actor, 'FAIL', {})).rejects.toThrow('boom');
    await expect(ask(actor, 'NOPE', {})).rejects.toBeInstanceOf(UnknownRequestError);
  });

  it('times out when nobody answers', async () => {
    const silent = createActor(fromCallback(() => undefined));
    silent.start();
    const err = await ask(silent, 'HELLO', {}, { timeoutMs: 50 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AskTimeoutError);
    expect((err as Error).message).toContain('HELLO');
  });

  it('rejects at once when the actor is stopped', async () => {
    const actor = startSupervisor([], {});
    actor.stop();
    await expect(ask(actor, 'STATS', {})).rejects.toBeInstanceOf(ActorStoppedError);
  });
});

describe('supervisor', () => {
  it('serialises requests with concurrency 1 and reports its queue', async () => {
    const order: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const actor = startSupervisor(order, {
      SLOW: async () => {
        order.push('slow-start');
        await gate;
        order.push('slow-end');
      },
      FAST: () => {
        order.push('fast');
      },
    });
    const slow = ask(actor, 'SLOW', {});
    const fast = ask(actor, 'FAST', {});
    const stats = await ask<SupervisorStats>(actor, 'STATS', {});
    expect(stats).toMatchObject({ queued: 1, running: 1 });
    release();
    await Promise.all([slow, fast]);
    expect(order).toEqual(['slow-start', 'slow-end', 'fast']);
  });

  it('DRAIN finishes queued work, closes the resource, then refuses new work', async () => {
    const log: string[] = [];
    const actor = startSupervisor(log, {
      WORK: async (e: Payload) => {
        await new Promise((r) => setTimeout(r, 20));
        log.push(`work ${String(e['n'])}`);
      },
    });
    const work = [ask(actor, 'WORK', { n: 1 }), ask(actor, 'WORK', { n: 2 })];
    await ask(actor, 'DRAIN', {});
    await Promise.all(work);
    expect(log).toEqual(['work 1', 'work 2', 'closed']);
    await expect(ask(actor, 'WORK', { n: 3 })).rejects.toBeInstanceOf(SupervisorClosedError);
  });

  it("work given up at a shutdown's deadline (every reply aborted): its askers get SupervisorClosedError, a running handler sees its signal aborted, a queued one never runs, DRAIN still closes", async () => {
    const log: string[] = [];
    const actor = startSupervisor(log, {
      // Holds the queue until its signal is aborted, as a mail send does.
      HANG: (_p: Payload, _r, { signal }) =>
        new Promise<void>((resolve) =>
          signal.addEventListener('abort', () => {
            log.push('hang aborted');
            resolve();
          }),
        ),
      WORK: () => log.push('work'),
    });
    const hanging = ask(actor, 'HANG', {}, { timeoutMs: 5_000 });
    const queued = ask(actor, 'WORK', {}, { timeoutMs: 5_000 });
    repliesOf(actor.system).abortAll(new SupervisorClosedError('the server'));
    await expect(hanging).rejects.toBeInstanceOf(SupervisorClosedError);
    await expect(queued).rejects.toBeInstanceOf(SupervisorClosedError);
    await ask(actor, 'DRAIN', {}, { timeoutMs: 1_000 });
    expect(log).toEqual(['hang aborted', 'closed']);
  });

  it('is reachable by systemId from anywhere in the system', async () => {
    const machine = setup({
      actors: { child: supervisor('child', { concurrency: 1, open: () => 7, handlers: { GET: (_e, r) => r } }) },
    }).createMachine({
      invoke: { src: 'child', systemId: 'child' },
    });
    const root = createActor(machine);
    root.start();
    await expect(ask(root.system.get('child'), 'GET', {})).resolves.toBe(7);
  });
});

/** Counts the AbortControllers made while `fn` runs (Node's global, swapped for a subclass that counts). */
async function abortControllersMadeBy(fn: () => Promise<void>): Promise<number> {
  const original = globalThis.AbortController;
  let made = 0;
  globalThis.AbortController = class extends original {
    constructor() {
      super();
      made++;
    }
  };
  try {
    await fn();
  } finally {
    globalThis.AbortController = original;
  }
  return made;
}

describe("an ask's cancellation", () => {
  it('makes no AbortSignal for asks whose handlers only check it, nested asks included; a handler that reads its signal gets one', async () => {
    const inner = startSupervisor([], {
      CHECK: (_p: Payload, _r, request) => request.aborted,
      SIGNAL: (_p: Payload, _r, request) => request.signal.aborted,
    });
    const outer = startSupervisor([], {
      // asks on with its own context: the inner ask is its caller's
      NESTED: (p: Payload, _r, request) => ask(inner, p['then'] as string, {}, request),
    });
    let answers: unknown[] = [];
    const quiet = await abortControllersMadeBy(async () => {
      answers = [await ask(inner, 'CHECK', {}), await ask(outer, 'NESTED', { then: 'CHECK' })];
    });
    expect(answers).toEqual([false, false]);
    expect(quiet).toBe(0);
    const reading = await abortControllersMadeBy(async () => {
      answers = [await ask(outer, 'NESTED', { then: 'SIGNAL' })];
    });
    expect(answers).toEqual([false]);
    expect(reading).toBe(1);
  });

  it("a handler that first reads its signal after its caller gave up gets one already aborted, with the caller's reason", async () => {
    let held: RequestContext | undefined;
    let finish!: () => void;
    const actor = startSupervisor([], {
      HOLD: (_p: Payload, _r, request) => {
        held = request;
        return new Promise<void>((resolve) => (finish = resolve));
      },
    });
    let error: unknown;
    const made = await abortControllersMadeBy(async () => {
      error = await ask(actor, 'HOLD', {}, { timeoutMs: 50 }).catch((e: unknown) => e);
    });
    expect(error).toBeInstanceOf(AskTimeoutError);
    expect(made).toBe(0);
    expect(held?.aborted).toBe(true);
    const signal = held!.signal;
    expect(signal.aborted).toBe(true);
    expect(signal.reason).toBe(error);
    finish();
  });

  it("a nested ask is aborted with the reason its caller's caller gave, and neither is left awaited", async () => {
    const seen: unknown[] = [];
    let finish!: (value: string) => void;
    const inner = startSupervisor([], {
      HANG: (_p: Payload, _r, request) => {
        request.onAbort((reason) => seen.push(reason));
        return new Promise<string>((resolve) => (finish = resolve));
      },
    });
    const outer = startSupervisor([], {
      NESTED: (_p: Payload, _r, request) => ask(inner, 'HANG', {}, request),
    });
    // The HTTP edge's context: the client's request, with time to spare.
    const client = new RequestContext(Date.now() + 5_000);
    const asked = ask(outer, 'NESTED', {}, client);
    await expect.poll(() => repliesOf(inner.system).size).toBe(1);
    const gone = new DeadlineExceededError('the client went away');
    client.abort(gone);
    await expect(asked).rejects.toBe(gone);
    expect(seen).toEqual([gone]);
    expect(repliesOf(inner.system).size).toBe(0);
    expect(repliesOf(outer.system).size).toBe(0);
    finish('too late');
  });
});

describe('the actor system of a running server', () => {
  it('lists the supervisors with their status and queue length on the debug endpoint', async () => {
    const t = await startTestServer();
    try {
      const res = await fetch(t.internalUrl('/_sydent/debug/actors'));
      expect(res.status).toBe(200);
      const body = (await res.json()) as { actors: { systemId: string; status: string; queueLength: number }[] };
      expect(body.actors.map((a) => a.systemId)).toEqual(['root', ...SUPERVISOR_IDS]);
      for (const a of body.actors) {
        expect(a.status).toBe('active');
        expect(a.queueLength).toBe(0);
      }
    } finally {
      await t.close();
    }
  });

  it('stops every supervisor on shutdown and leaves a database that reopens cleanly', async () => {
    const t = await startTestServer();
    const system = t.server.ctx.system;
    await t.server.close();
    expect(Object.keys(system.supervisorStatuses())).toEqual(SUPERVISOR_IDS);
    for (const status of Object.values(system.supervisorStatuses())) expect(status).toBe('stopped');
    expect(system.status).toBe('stopped');
    const { default: Database } = await import('better-sqlite3');
    const again = new Database(t.config.db.dbFile);
    expect(again.pragma('user_version', { simple: true })).toBeGreaterThanOrEqual(5);
    again.close();
    await t.close();
  });
});
