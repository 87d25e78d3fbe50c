/**
 * What the per-address connection cap counts by (http/connection-limits.ts), and how the caps are fitted to the
 * file-descriptor limit (http/descriptor-budget.ts), and who the per-address cap spares. The caps at work against a
 * real process under a file limit are in slow-clients.test.ts.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { addressKey } from '../src/http/connection-limits.js';
import { fitCaps, openFileLimit } from '../src/http/descriptor-budget.js';
import { startTestServer } from './helpers/server.js';
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
    expect(fitCaps(caps, 300)).toEqual({
      ...caps,
      client: 56,
      clientPerAddress: 56,
      lowered: { client: 1000, clientPerAddress: 100 },
    });
    expect(fitCaps(caps, 200)).toBeNull();
  });

  it('read the soft limit from /proc/self/limits', () => {
    const t = tempDir();
    const file = path.join(t.dir, 'limits');
    fs.writeFileSync(
      file,
      'Limit                     Soft Limit           Hard Limit           Units\nMax open files            4096                 524288               files\n',
    );
    expect(openFileLimit(file)).toBe(4096);
    fs.writeFileSync(file, 'Max open files            unlimited            unlimited            files\n');
    expect(openFileLimit(file)).toBeNull();
    expect(openFileLimit(path.join(t.dir, 'none'))).toBeNull();
    t.cleanup();
  });
});

describe('the per-address cap', () => {
  it('spares the trusted reverse proxies, which carry every client', async () => {
    const t = await startTestServer({
      conf: {
        http: {
          obey_x_forwarded_for: 'true',
          trusted_proxies: '127.0.0.2',
          'clientapi.http.max_connections_per_address': '5',
        },
      },
    });
    const port = Number(new URL(t.server.clientUrl).port);
    const sockets: net.Socket[] = [];
    const open = (localAddress: string, n: number) =>
      Promise.all(
        Array.from({ length: n }, () => {
          const socket = net.connect({ port, host: '127.0.0.1', localAddress });
          socket.on('error', () => undefined);
          sockets.push(socket);
          return new Promise<void>((resolve) => socket.once('connect', () => resolve()));
        }),
      );
    try {
      await open('127.0.0.2', 12);
      await open('127.0.0.3', 12);
      await new Promise((r) => setTimeout(r, 200));
      const held = (address: string) => sockets.filter((s) => s.localAddress === address && !s.destroyed).length;
      expect(held('127.0.0.2')).toBe(12);
      expect(held('127.0.0.3')).toBe(5);
    } finally {
      for (const s of sockets) s.destroy();
      await t.close();
    }
  });
});
