/**
 * ChurnMap, the map of the entries that come and go with requests (asks awaiting their answer, a key's queue, the
 * session events in flight): a map's behaviour, whatever the keys look like.
 */
import { describe, expect, it } from 'vitest';
import { ChurnMap } from '../src/util/churn-map.js';

describe('ChurnMap', () => {
  it('sets, gets, replaces and deletes, counting its entries', () => {
    const m = new ChurnMap<number>();
    expect(m.size).toBe(0);
    expect(m.get('a')).toBeUndefined();
    expect(m.set('a', 1).set('b', 2).size).toBe(2);
    m.set('a', 3);
    expect(m.size).toBe(2);
    expect(m.get('a')).toBe(3);
    expect(m.has('b')).toBe(true);
    expect(m.delete('b')).toBe(true);
    expect(m.delete('b')).toBe(false);
    expect(m.has('b')).toBe(false);
    expect(m.size).toBe(1);
  });

  it('keeps keys that are numbers, empty, or the names of Object.prototype apart and as given', () => {
    const m = new ChurnMap<string>();
    const keys = ['1', '01', '4294967295', '', '__proto__', 'constructor', 'toString', 'hasOwnProperty', ':x', 'x'];
    for (const k of keys) m.set(k, `v${k}`);
    expect(m.size).toBe(keys.length);
    for (const k of keys) expect(m.get(k)).toBe(`v${k}`);
    expect(m.has('valueOf')).toBe(false);
    expect(m.get('valueOf')).toBeUndefined();
    expect(new Map([...m])).toEqual(new Map(keys.map((k) => [k, `v${k}`])));
    expect([...m.values()].sort()).toEqual(keys.map((k) => `v${k}`).sort());
    for (const k of keys) expect(m.delete(k)).toBe(true);
    expect(m.size).toBe(0);
    expect([...m]).toEqual([]);
  });

  it('holds any number of entries that come and go', () => {
    const m = new ChurnMap<number>();
    for (let i = 0; i < 100_000; i++) {
      m.set(String(i), i);
      if (i >= 10) expect(m.delete(String(i - 10))).toBe(true);
    }
    expect(m.size).toBe(10);
    expect([...m].map(([k]) => Number(k)).sort((a, b) => a - b)).toEqual([
      99_990, 99_991, 99_992, 99_993, 99_994, 99_995, 99_996, 99_997, 99_998, 99_999,
    ]);
  });
});
