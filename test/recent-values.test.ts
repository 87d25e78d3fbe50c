import { describe, expect, it } from 'vitest';
import { parsePhone } from '../src/matrix/index.js';
import { RecentValues } from '../src/util/recent-values.js';

describe('RecentValues', () => {
  it('computes a key once while it is kept, and keeps the last `capacity` keys only', () => {
    const computed: string[] = [];
    const recent = new RecentValues<string>(3);
    const get = (key: string) =>
      recent.through(key, (k) => {
        computed.push(k);
        return k.toUpperCase();
      });
    expect([get('a'), get('b'), get('a'), get('c')]).toEqual(['A', 'B', 'A', 'C']);
    expect(computed).toEqual(['a', 'b', 'c']);
    // a fourth key pushes out the oldest set (a), whatever was read since
    expect(get('d')).toBe('D');
    expect(recent.size).toBe(3);
    expect([get('b'), get('c'), get('d')]).toEqual(['B', 'C', 'D']);
    expect(computed).toEqual(['a', 'b', 'c', 'd']);
    expect(get('a')).toBe('A');
    expect(computed).toEqual(['a', 'b', 'c', 'd', 'a']);
    expect(recent.size).toBe(3);
  });

  it('holds no more than its capacity under many distinct keys', () => {
    const recent = new RecentValues<number>(100);
    for (let i = 0; i < 10_000; i++) recent.through(`key${i}`, () => i);
    expect(recent.size).toBe(100);
    expect(recent.through('key9999', () => -1)).toBe(9999);
    expect(recent.through('key0', () => -1)).toBe(-1);
  });

  it('keeps a null or undefined value as a value', () => {
    let calls = 0;
    const recent = new RecentValues<null | undefined>(2);
    recent.through('n', () => (calls++, null));
    recent.through('u', () => (calls++, undefined));
    expect(recent.through('n', () => (calls++, null))).toBeNull();
    expect(recent.through('u', () => (calls++, undefined))).toBeUndefined();
    expect(calls).toBe(2);
  });
});

describe('parsePhone, answered from the numbers parsed lately', () => {
  it('answers a number again as it did the first time, by region as given in any case', () => {
    const first = parsePhone('07700 900750', 'GB');
    expect(first).toEqual({ msisdn: '447700900750', countryCode: '44', intlFmt: '+44 7700 900750' });
    expect(parsePhone('07700 900750', 'GB')).toEqual(first);
    expect(parsePhone('07700 900750', 'gb')).toEqual(first);
    // the same digits from another region are another number
    expect(parsePhone('07700 900750', 'US')).toBeNull();
    expect(parsePhone('not a number', 'GB')).toBeNull();
    expect(parsePhone('not a number', 'GB')).toBeNull();
  });
});
