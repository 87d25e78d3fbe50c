/**
 * The answers a listener has not written yet (src/http/pending-answers.ts): what its stop waits for and answers 503.
 * Slots are reused, so the count and the list stay exact however answers join and leave.
 */
import http from 'node:http';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { PendingAnswers } from '../src/http/pending-answers.js';

const answer = (): http.ServerResponse => new http.ServerResponse(new http.IncomingMessage(new net.Socket()));

describe('pending answers', () => {
  it('lists exactly the answers added and not removed, through many reuses of their slots', () => {
    const pending = new PendingAnswers();
    const live = new Map<number, http.ServerResponse>();
    // answers joining and leaving in a shifting window, as requests on several connections do
    for (let i = 0; i < 200; i++) {
      const res = answer();
      live.set(pending.add(res), res);
      if (i % 3 === 2) {
        const [slot] = [...live.keys()].slice(i % 2 === 0 ? 0 : -1);
        pending.remove(slot!);
        live.delete(slot!);
      }
      expect(pending.size).toBe(live.size);
    }
    expect(new Set(pending.list())).toEqual(new Set(live.values()));
    expect(pending.list()).toHaveLength(live.size);
    for (const slot of [...live.keys()]) pending.remove(slot);
    expect(pending.size).toBe(0);
    expect(pending.list()).toEqual([]);
  });

  it('a slot removed twice counts once', () => {
    const pending = new PendingAnswers();
    const a = pending.add(answer());
    const b = answer();
    pending.add(b);
    pending.remove(a);
    pending.remove(a);
    expect(pending.size).toBe(1);
    expect(pending.list()).toEqual([b]);
  });
});
