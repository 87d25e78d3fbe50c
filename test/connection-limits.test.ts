/**
 * What the per-address connection cap counts by (http/connection-limits.ts), and how the caps are fitted to the
 * file-descriptor limit (http/descriptor-budget.ts). The caps at work against a real process are in
 * slow-clients.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { addressKey } from '../src/http/connection-limits.js';
import { fitCaps, openFileLimit } from '../src/http/descriptor-budget.js';
import { tempDir } from './helpers/tmp.js';

describe('the address a connection counts against', () => {
  it('is the IPv4 address, an IPv4-mapped IPv6 one as IPv4, and the /64 of an IPv6 address', () => {
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1:2::/64');
    // every address of one /64, however written, counts as one client
    expect(addressKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:3::1')).toBe('2001:db8:1:3::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
  });
});

describe('the caps under the file-descriptor limit', () => {
  const caps = { client: 1000, clientPerAddress: 100, others: { internal: 100, metrics: 16 } };

  it('are kept when they fit with 128 descriptors to spare', () => {
    expect(fitCaps(caps, 1000 + 100 + 16 + 128)).toEqual({ ...caps, lowered: null });
    expect(fitCaps(caps, null)).toEqual({ ...caps, lowered: null });
  });

  it("lower the client listener's when they do not, and refuse a limit that leaves it fewer than 32", () => {
    expect(fitCaps(caps, 1024)).toEqual({ ...caps, client: 780, lowered: { client: 1000, clientPerAddress: 100 } });
    expect(fitCaps(caps, 300)).toEqual({ ...caps, client: 56, clientPerAddress: 56, lowered: { client: 1000, clientPerAddress: 100 } });
    expect(fitCaps(caps, 200)).toBeNull();
  });

  it('read the soft limit from /proc/self/limits', () => {
    const t = tempDir();
    const file = path.join(t.dir, 'limits');
    fs.writeFileSync(file, 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            4096                 524288               files\n');
    expect(openFileLimit(file)).toBe(4096);
    fs.writeFileSync(file, 'Max open files            unlimited            unlimited            files\n');
    expect(openFileLimit(file)).toBeNull();
    expect(openFileLimit(path.join(t.dir, 'none'))).toBeNull();
    t.cleanup();
  });
});
