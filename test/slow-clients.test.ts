/**
 * Slow and abusive clients against sydent-ts running as its own process, over raw sockets: requests that trickle
 * their headers or body are answered 408 and closed at their deadline while other clients are answered at once;
 * connections are capped per address and in total, under the process's file-descriptor limit, with a reserve that
 * keeps `/versions` and the internal listener answering; a body far over the limit is answered 413 to a client that
 * writes it all before reading.
 */
import Database from 'better-sqlite3';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { V2_LOOKUP_PATH } from '../src/http/routes/lookup.js';
import { cleanupsAfterEach } from './helpers/cleanups.js';
import { freePort, logLines, spawnServer, waitForStart, type ServerProcess } from './helpers/process.js';
import { tempDir } from './helpers/tmp.js';
import { loopHeld } from './helpers/loop-held.js';

const VERSIONS = '/_matrix/identity/versions';
const V1_BULK_LOOKUP = '/_matrix/identity/api/v1/bulk_lookup';
const TOKEN = 'slowclientstoken';

interface Served {
  p: ServerProcess;
  dir: string;
  port: number;
  internalPort: number;
}

/** what the running test started; `shared` is what a describe block's tests share */
const cleanups = cleanupsAfterEach();
const shared: Array<() => unknown> = [];

async function serve(
  http: Record<string, string>,
  opts: { fileLimit?: number; shared?: boolean } = {},
): Promise<Served> {
  const t = tempDir();
  const [port, internalPort] = [await freePort(), await freePort()];
  const lines = Object.entries({
    'clientapi.http.bind_address': '127.0.0.1',
    'clientapi.http.port': String(port),
    'internalapi.http.port': String(internalPort),
    ...http,
  }).map(([k, v]) => `${k} = ${v}`);
  fs.writeFileSync(
    path.join(t.dir, 'sydent.conf'),
    `[general]\nserver.name = is.example.test\n\n[http]\n${lines.join('\n')}\n`,
  );
  const p = spawnServer({ cwd: t.dir, ...(opts.fileLimit !== undefined ? { fileLimit: opts.fileLimit } : {}) });
  (opts.shared ? shared : cleanups).push(() => {
    p.child.kill('SIGKILL');
    t.cleanup();
  });
  await waitForStart(p);
  return { p, dir: t.dir, port, internalPort };
}

/** An account token, written as registration writes it: the lookups then take the authenticated path. */
function addToken(dir: string): void {
  const db = new Database(path.join(dir, 'sydent.db'));
  db.prepare('INSERT INTO accounts(user_id, created_ts) VALUES (?, ?)').run('@slow:hs.example', Date.now());
  db.prepare('INSERT INTO tokens(token, user_id) VALUES (?, ?)').run(TOKEN, '@slow:hs.example');
  db.close();
}

interface Trickle {
  /** ms from connecting to the server's first byte, and to the connection's close */
  answeredAt: number | null;
  closedAt: number | null;
  /** `performance.now()` at connecting */
  started: number;
  status: number | null;
  body: string;
}

/**
 * One connection that sends `head` at once, then `drip` one byte every 100 ms for as long as the connection is
 * open, from `localAddress`; what the server answers and when it closes are recorded.
 */
function trickle(
  port: number,
  localAddress: string,
  head: string,
  drip: string,
): { connected: Promise<void>; done: Promise<Trickle>; record: Trickle } {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress });
  const connected = new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  const record: Trickle = { answeredAt: null, closedAt: null, started: 0, status: null, body: '' };
  let received = '';
  let timer: NodeJS.Timeout | undefined;
  socket.on('connect', () => {
    record.started = performance.now();
    socket.write(head);
    let i = 0;
    timer = setInterval(() => {
      if (!socket.destroyed && socket.writable) socket.write(drip[i++ % drip.length]!);
    }, 100);
  });
  socket.on('data', (chunk: Buffer) => {
    record.answeredAt ??= performance.now() - record.started;
    received += chunk.toString('latin1');
  });
  socket.on('error', () => undefined);
  const done = new Promise<Trickle>((resolve) =>
    socket.on('close', () => {
      clearInterval(timer);
      record.closedAt = performance.now() - record.started;
      const [head = '', body = ''] = received.split('\r\n\r\n');
      record.status = head ? Number(head.split(' ')[1]) : null;
      record.body = body;
      resolve(record);
    }),
  );
  return { connected, done, record };
}

/** An ordinary request on a new connection from 127.0.0.1: its status, when it began and how long it took. */
async function timed(url: string, init?: RequestInit): Promise<{ status: number; began: number; ms: number }> {
  const began = performance.now();
  const res = await fetch(url, { ...init, headers: { ...init?.headers, connection: 'close' } });
  await res.arrayBuffer();
  return { status: res.status, began, ms: performance.now() - began };
}

afterAll(async () => {
  for (const c of shared.splice(0).reverse()) await c();
});

describe('requests that trickle', { timeout: 60_000 }, () => {
  it('400 connections trickling headers or bodies are answered 408 and closed at their deadline; another client is answered within a second all along', async () => {
    const s = await serve({ headers_timeout_seconds: '1', request_timeout_seconds: '2' });
    addToken(s.dir);
    const details = await fetch(`http://127.0.0.1:${s.port}/_matrix/identity/v2/hash_details`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const { lookup_pepper: pepper } = (await details.json()) as { lookup_pepper: string };
    const lookupBody = JSON.stringify({ addresses: ['nobody@example.org email'], algorithm: 'none', pepper });
    const lookup = {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: lookupBody,
    };
    const others = [
      { what: 'versions', url: `http://127.0.0.1:${s.port}${VERSIONS}` },
      { what: 'lookup (lane)', url: `http://127.0.0.1:${s.port}${V2_LOOKUP_PATH}`, init: lookup },
      {
        what: 'bulk_lookup (fastify)',
        url: `http://127.0.0.1:${s.port}${V1_BULK_LOOKUP}`,
        init: { method: 'POST', body: '{"threepids":[["email","nobody@example.org"]]}' },
      },
    ];
    // once before, so that what is measured below is not the first call of each route
    for (const o of others) expect((await timed(o.url, o.init)).status, o.what).toBe(200);
    const kinds = [
      // the v2 lookup's fast lane, which reads its body ahead of fastify
      {
        head: `POST ${V2_LOOKUP_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n`,
        deadline: 2000,
      },
      // a fastify route that reads its body
      {
        head: `POST ${V1_BULK_LOOKUP} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n`,
        deadline: 2000,
      },
      // a chunked body
      {
        head: `POST ${V1_BULK_LOOKUP} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n`,
        deadline: 2000,
      },
      // headers that never end
      { head: `GET ${VERSIONS} HTTP/1.1\r\nHost: x\r\n`, drip: 'X-Slow: 1\r\n', deadline: 1000 },
    ];
    // Four addresses besides the other client's: 100 each, within the per-address cap.
    const tricklers = Array.from({ length: 400 }, (_, i) => {
      const kind = kinds[i % kinds.length]!;
      return { kind, ...trickle(s.port, `127.0.0.${2 + (i % 4)}`, kind.head, kind.drip ?? '{') };
    });

    const held = loopHeld();
    cleanups.push(() => held.stop());
    await Promise.all(tricklers.map((t) => t.connected));

    // While they trickle, and when the server answers and closes them all at their deadlines: until the last one is
    // closed (or long past the deadlines, for a server that never closes them), then once more.
    const answers: Array<{ what: string; status: number; began: number; ms: number }> = [];
    let allClosed = false;
    void Promise.all(tricklers.map((t) => t.done)).then(() => (allClosed = true));
    const giveUp = performance.now() + 15_000;
    for (let last = false; !last;) {
      last = allClosed || performance.now() > giveUp;
      for (const o of others) answers.push({ what: o.what, ...(await timed(o.url, o.init)) });
      await new Promise((r) => setTimeout(r, 50));
    }
    // The answers were measured from while most of the 400 were held open.
    const answeredAt = tricklers.map((t) => t.record.started + (t.record.answeredAt ?? Infinity)).sort((x, y) => x - y);
    expect(answers[0]!.began).toBeLessThan(answeredAt[200]!);
    // Under a second, less what held up this test's own loop: a server that keeps other clients waiting on the
    // tricklers makes them wait for their deadlines (1 and 2 s) while this loop idles, and stays over it however
    // loaded the machine.
    for (const a of answers) {
      expect(a.status, a.what).toBe(200);
      const own = held.within(a.began, a.began + a.ms);
      expect(a.ms - own, `${a.what} took ${Math.round(a.ms)} ms, ${Math.round(own)} of them held up here`).toBeLessThan(
        1000,
      );
    }

    // Every one closed by its deadline, give or take Node's check (every 250 ms here) and what held up this test's
    // loop; the next deadline a server could wrongly use is the default's, 10 s.
    const slack = 2000;
    tricklers.forEach(({ kind, record }, i) => {
      const what = `connection ${i} (${kind.head.split('\r\n')[0]})`;
      expect(record.closedAt, `${what} is still open`).not.toBeNull();
      const own = held.within(record.started, record.started + record.closedAt!);
      expect(record.closedAt! - own, `${what}, ${Math.round(own)} ms held up here`).toBeLessThan(kind.deadline + slack);
      expect(record.answeredAt!, what).toBeGreaterThanOrEqual(kind.deadline - 50);
      expect(record.status, what).toBe(408);
      expect(JSON.parse(record.body), what).toEqual({
        errcode: 'M_UNKNOWN',
        error: 'The request did not arrive in time',
      });
    });
  });
});

describe('bodies far over the limit, idle connections', { timeout: 60_000 }, () => {
  let s: Served;
  beforeAll(async () => {
    s = await serve({ keepalive_timeout_seconds: '1' }, { shared: true });
    addToken(s.dir);
  });

  it('an idle keep-alive connection is closed after keepalive_timeout_seconds', async () => {
    const held = loopHeld();
    cleanups.push(() => held.stop());
    const socket = net.connect(s.port, '127.0.0.1');
    socket.on('error', () => undefined);
    let answered = 0;
    socket.once('data', () => (answered = performance.now()));
    const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(performance.now())));
    socket.write(`GET ${VERSIONS} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const closedAt = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(Infinity), 10_000))]);
    expect(answered).toBeGreaterThan(0);
    expect(closedAt, 'still open 10 s later').toBeLessThan(Infinity);
    const idle = closedAt - answered;
    expect(idle).toBeGreaterThanOrEqual(900);
    // 1 s, give or take what held up this test's loop; the default a server could wrongly keep is 65 s.
    expect(idle - held.within(answered, closedAt)).toBeLessThan(4000);
    socket.destroy();
  });

  /**
   * As a client that writes the whole request before it reads: nothing is read until the write is done (the write
   * fails when the server closes under it).
   */
  function writeAllThenRead(request: Buffer): Promise<{ written: Error | null; answer: string }> {
    return new Promise((resolve) => {
      const socket = net.connect(s.port, '127.0.0.1');
      socket.pause();
      let answer = '';
      let written: Error | null = null;
      socket.on('error', (error) => (written ??= error));
      socket.on('close', () => resolve({ written, answer }));
      socket.on('data', (chunk: Buffer) => {
        answer += chunk.toString('latin1');
        // one whole answer read: the client is done
        if (/\r\n\r\n\{.*\}$/s.test(answer)) socket.destroy();
      });
      socket.write(request, (error) => {
        written ??= error ?? null;
        socket.resume();
      });
    });
  }

  const TEN_MB = Buffer.alloc(10 * 1024 * 1024, 'a');
  const cases: Array<[string, Buffer]> = [
    [
      'a declared length, on a fastify route',
      Buffer.concat([
        Buffer.from(
          `POST ${V1_BULK_LOOKUP} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${TEN_MB.length}\r\n\r\n`,
        ),
        TEN_MB,
      ]),
    ],
    [
      'a declared length, on the lookup lane',
      Buffer.concat([
        Buffer.from(
          `POST ${V2_LOOKUP_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\nContent-Length: ${TEN_MB.length}\r\n\r\n`,
        ),
        TEN_MB,
      ]),
    ],
    [
      'chunked',
      Buffer.concat([
        Buffer.from(
          `POST ${V1_BULK_LOOKUP} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${TEN_MB.length.toString(16)}\r\n`,
        ),
        TEN_MB,
        Buffer.from('\r\n0\r\n\r\n'),
      ]),
    ],
  ];
  for (const [what, request] of cases) {
    it(`10 MB with ${what}: the client writes it all, then reads 413 M_TOO_LARGE`, async () => {
      const { written, answer } = await writeAllThenRead(request);
      expect(written?.message ?? null, 'the write').toBeNull();
      expect(answer.split('\r\n')[0]).toBe('HTTP/1.1 413 Payload Too Large');
      expect(JSON.parse(answer.split('\r\n\r\n')[1]!)).toEqual({
        errcode: 'M_TOO_LARGE',
        error: 'Request body is larger than 524288 bytes',
      });
    });
  }
});

describe('connection caps', { timeout: 60_000 }, () => {
  it('under a file limit of 1024: 100 connections per address, the total lowered to fit, a reserve for new addresses; /versions and the internal listener answer, one log line per cap', async () => {
    const s = await serve({ headers_timeout_seconds: '30', request_timeout_seconds: '30' }, { fileLimit: 1024 });
    // 1024 descriptors, 128 kept, 100 for the internal listener: 796 for the client listener.
    expect(
      logLines(
        s.p,
        '[http] clientapi.http.max_connections is lowered to fit the file-descriptor limit; raise the limit (ulimit -n, LimitNOFILE=) to keep it',
      ),
    ).toEqual([expect.objectContaining({ fileLimit: 1024, max_connections: { configured: 1000, used: 796 } })]);

    /** Opens `count` connections from `address` that send half a request and wait; resolves once each is open or closed. */
    const open: Array<{ address: string; socket: net.Socket }> = [];
    async function attack(address: string, count: number): Promise<void> {
      await Promise.all(
        Array.from({ length: count }, () => {
          const socket = net.connect({ port: s.port, host: '127.0.0.1', localAddress: address });
          socket.on('error', () => undefined);
          open.push({ address, socket });
          return new Promise<void>((resolve) => {
            socket.once('connect', () => {
              socket.write(`GET ${VERSIONS} HTTP/1.1\r\nHost: x\r\n`);
              resolve();
            });
            socket.once('close', () => resolve());
          });
        }),
      );
      // A refused connection is closed by the server as soon as it accepts it, which a loaded machine may do late (the
      // kernel completes the handshake before): the count is read once it has stopped changing.
      await settled();
    }
    const held = (address?: string) =>
      open.filter((o) => !o.socket.destroyed && (address === undefined || o.address === address)).length;
    async function settled(): Promise<void> {
      let last = held();
      let since = Date.now();
      for (const end = Date.now() + 10_000; Date.now() < end;) {
        await new Promise((r) => setTimeout(r, 25));
        const now = held();
        if (now !== last) [last, since] = [now, Date.now()];
        else if (Date.now() - since >= 400) return;
      }
    }
    const answers = async (url: string) => (await timed(url)).status;

    // 150 attempts from one address: 100 held.
    await attack('127.0.0.2', 150);
    expect(held('127.0.0.2')).toBe(100);
    // Nine more addresses at their cap: the total passes 716 (796 less its last tenth), and from there an address
    // holding 4 gets no more.
    for (let i = 3; i <= 11; i++) await attack(`127.0.0.${i}`, 100);
    expect(held()).toBeLessThanOrEqual(796);
    for (let i = 2; i <= 11; i++) expect(held(`127.0.0.${i}`)).toBeLessThanOrEqual(100);
    const full = Array.from({ length: 10 }, (_, i) => held(`127.0.0.${i + 2}`)).filter((n) => n === 100).length;
    expect(full).toBe(7);
    expect(held('127.0.0.10')).toBe(4);
    expect(held('127.0.0.11')).toBe(4);
    // A new address still gets in, the internal listener has its own budget.
    expect(await answers(`http://127.0.0.1:${s.port}${VERSIONS}`)).toBe(200);
    expect(await answers(`http://127.0.0.1:${s.internalPort}/_sydent/debug/actors`)).toBe(200);

    // Many new addresses, four each, take the reserve: the listener is full, nobody new gets in, the internal
    // listener still answers, and the process stays under its descriptor limit.
    await Promise.all(Array.from({ length: 26 }, (_, i) => attack(`127.0.0.${20 + i}`, 4)));
    expect(held()).toBe(796);
    await expect(answers(`http://127.0.0.1:${s.port}${VERSIONS}`)).rejects.toThrow();
    expect(await answers(`http://127.0.0.1:${s.internalPort}/_sydent/debug/actors`)).toBe(200);
    expect(fs.readdirSync(`/proc/${s.p.child.pid}/fd`).length).toBeLessThan(1024);

    // A line when a cap is first reached, then at most one every 10 s saying how many more it refused: not one per
    // connection (hundreds were refused).
    const refused = (msg: string) => logLines(s.p, `connection refused: ${msg}`);
    const perAddress = refused('the client address holds its maximum of connections');
    const reserve = refused('the listener is nearly full, its last connections are kept for other addresses');
    const total = refused('the listener holds its maximum of connections');
    expect(perAddress[0]).toMatchObject({
      listener: 'client',
      limit: 100,
      key: '[http] clientapi.http.max_connections_per_address',
      address: '127.0.0.2',
      refused: 1,
    });
    expect(reserve[0]).toMatchObject({
      listener: 'client',
      limit: 796,
      key: '[http] clientapi.http.max_connections',
      refused: 1,
    });
    expect(total[0]).toMatchObject({
      listener: 'client',
      limit: 796,
      key: '[http] clientapi.http.max_connections',
      refused: 1,
    });
    for (const lines of [perAddress, reserve, total]) expect(lines.length).toBeLessThanOrEqual(2);

    // Once the attackers go, the listener serves again.
    for (const o of open) o.socket.destroy();
    await new Promise((r) => setTimeout(r, 300));
    expect(await answers(`http://127.0.0.1:${s.port}${VERSIONS}`)).toBe(200);
  });
});
