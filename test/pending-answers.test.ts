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
    const live: http.ServerResponse[] = [];
    // answers joining and leaving in a shifting window, as requests on several connections do
    for (let i = 0; i < 200; i++) {
      const res = answer();
      pending.add(res);
      live.push(res);
      if (i % 3 === 2) {
        const [gone] = live.splice(i % 2 === 0 ? 0 : -1, 1);
        pending.remove(gone!);
      }
      expect(pending.size).toBe(live.length);
    }
    expect(new Set(pending.list())).toEqual(new Set(live));
    expect(pending.list()).toHaveLength(live.length);
    for (const res of live) pending.remove(res);
    expect(pending.size).toBe(0);
    expect(pending.list()).toEqual([]);
  });

  it('an answer removed twice counts once, and its slot taken by another since is not freed by it', () => {
    const pending = new PendingAnswers();
    const a = answer();
    const b = answer();
    pending.add(a);
    pending.add(b);
    pending.remove(a);
    pending.remove(a);
    expect(pending.size).toBe(1);
    expect(pending.list()).toEqual([b]);
    // c takes a's slot; a's late second remove must leave c in it
    const c = answer();
    pending.add(c);
    pending.remove(a);
    expect(pending.size).toBe(2);
    expect(new Set(pending.list())).toEqual(new Set([b, c]));
  });
});
