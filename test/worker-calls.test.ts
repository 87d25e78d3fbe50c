/**
 * The calls in flight to a worker thread (src/util/worker-calls.ts), on real threads: answered by id, refused when
 * the thread dies (its owner told once) or is ended.
 */
import { describe, expect, it } from 'vitest';
import { WorkerCalls, type ThreadEnd } from '../src/util/worker-calls.js';

// echoes `{ id, value }`; `exit` ends the thread with that code, `throw` throws out of the handler, `hold` never answers
const ECHO = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => {
  if (m.exit !== undefined) process.exit(m.exit);
  if (m.throw) throw new Error(m.throw);
  if (m.hold) return;
  parentPort.postMessage({ id: m.id, value: m.value });
});
`;

function echo() {
  const deaths: string[] = [];
  const calls = new WorkerCalls<string>(ECHO, {
    failure: (end: ThreadEnd) => new Error('error' in end ? `failed: ${end.error.message}` : `exited ${end.exitCode}`),
    onDeath: () => deaths.push('dead'),
  });
  calls.worker.on('message', (m: { id: number; value: string }) => calls.resolve(m.id, m.value));
  const send = (message: object) => {
    const { id, answer } = calls.start();
    calls.worker.postMessage({ id, ...message });
    return answer;
  };
  return { calls, deaths, send };
}

describe('WorkerCalls', () => {
  it('answers each call by its id, in whatever order the answers come', async () => {
    const { calls, send } = echo();
    try {
      const answers = await Promise.all(['a', 'b', 'c'].map((value) => send({ value })));
      expect(answers).toEqual(['a', 'b', 'c']);
      expect(calls.size).toBe(0);
      expect(calls.resolve(1, 'late')).toBe(false);
    } finally {
      await calls.terminate(() => new Error('ended'));
    }
  });

  it('refuses the calls in flight when the thread exits or throws, and tells its owner once', async () => {
    for (const [end, message] of [
      [{ exit: 3 }, 'exited 3'],
      [{ throw: 'boom' }, 'failed: boom'],
    ] as const) {
      const { calls, deaths, send } = echo();
      const held = send({ hold: true });
      const ending = send(end);
      await Promise.all([expect(held).rejects.toThrow(message), expect(ending).rejects.toThrow(message)]);
      await new Promise<void>((resolve) => (calls.dead ? resolve() : calls.worker.once('exit', () => resolve())));
      expect(calls.dead).toBe(true);
      expect(deaths).toEqual(['dead']);
      expect(calls.size).toBe(0);
    }
  });

  it('terminate refuses the calls in flight with its own error and does not report a death', async () => {
    const { calls, deaths, send } = echo();
    const held = send({ hold: true });
    const done: string[] = [];
    const { answer } = calls.start(() => done.push('done'));
    const refused = Promise.all([expect(held).rejects.toThrow('closed'), expect(answer).rejects.toThrow('closed')]);
    await calls.terminate(() => new Error('closed'));
    await refused;
    expect(done).toEqual(['done']);
    expect(deaths).toEqual([]);
    expect(calls.dead).toBe(true);
  });
});
