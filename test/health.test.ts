/**
 * GET /health and GET /ready on the client listener: what a load balancer or an orchestrator polls.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';

const servers: TestServer[] = [];
afterEach(async () => {
  for (const t of servers.splice(0)) await t.close();
});

async function start(opts: Parameters<typeof startTestServer>[0] = {}): Promise<TestServer> {
  const t = await startTestServer(opts);
  servers.push(t);
  return t;
}

async function get(url: string): Promise<{ status: number; body: Record<string, unknown>; type: string | null }> {
  const res = await fetch(url);
  return {
    status: res.status,
    type: res.headers.get('content-type'),
    body: (await res.json()) as Record<string, unknown>,
  };
}

const ALL_ACTIVE = {
  store: 'active',
  mailer: 'active',
  sms: 'active',
  notifier: 'active',
  replication: 'active',
  sessions: 'active',
};

describe('GET /health and GET /ready', () => {
  it('answer 200 JSON on the client listener while the server runs', async () => {
    const t = await start();
    const health = await get(t.url('/health'));
    expect(health).toMatchObject({ status: 200, body: { status: 'alive' } });
    expect(health.type).toContain('application/json');
    const ready = await get(t.url('/ready'));
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({
      ready: true,
      status: 'ready',
      database: 'ok',
      supervisors: ALL_ACTIVE,
      node: `${os.hostname()}:${process.pid}`,
    });
  });

  it('/ready answers 503 when the database file was replaced or removed under the server', async () => {
    const t = await start();
    const db = path.join(t.dir, 'sydent.db');
    // A restore copied over the live file: the server still holds the old one.
    fs.copyFileSync(db, `${db}.copy`);
    fs.renameSync(`${db}.copy`, db);
    expect(await get(t.url('/ready'))).toMatchObject({
      status: 503,
      body: { ready: false, status: 'not ready', database: 'file replaced' },
    });
    fs.rmSync(db);
    expect(await get(t.url('/ready'))).toMatchObject({ status: 503, body: { ready: false, database: 'file missing' } });
    // Still alive: the process answers.
    expect((await get(t.url('/health'))).status).toBe(200);
  });

  it('/ready answers 503 and names what is down when the actors have stopped and the database is closed', async () => {
    const t = await start();
    // The actors stop (the store closing the database last) while the listener still answers.
    await t.server.ctx.system.stop();
    const ready = await get(t.url('/ready'));
    expect(ready.status).toBe(503);
    expect(ready.body).toMatchObject({ ready: false, status: 'not ready', database: 'unreachable' });
    expect(Object.values(ready.body['supervisors'] as Record<string, string>).every((s) => s !== 'active')).toBe(true);
  });

  it('after SIGTERM, /ready answers 503 for drain_seconds while every request is still served, then the listener closes', async () => {
    const t = await startTestServer({ conf: { http: { drain_seconds: '1' } } });
    const started = Date.now();
    const closed = t.server.close({ drain: true });
    expect(await get(t.url('/ready'))).toMatchObject({ status: 503, body: { ready: false, status: 'draining' } });
    expect((await get(t.url('/health'))).status).toBe(200);
    expect((await get(t.url('/_matrix/identity/versions'))).status).toBe(200);
    await closed;
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
    await expect(fetch(t.url('/health'))).rejects.toThrow();
    await t.close();
  });

  it('without drain (SIGINT, or drain_seconds = 0) the listeners close at once', async () => {
    const t = await startTestServer({ conf: { http: { drain_seconds: '30' } } });
    const started = Date.now();
    await t.server.close();
    expect(Date.now() - started).toBeLessThan(5000);
    await expect(fetch(t.url('/health'))).rejects.toThrow();
    await t.close();
  });

  it('are not logged at info (they are polled), but at debug, with the listener named', async () => {
    const lines: string[] = [];
    const sink = { write: (l: string) => void lines.push(l) };
    const t = await start({ log: pino({ level: 'info' }, sink) });
    await get(t.url('/health'));
    await get(t.url('/ready'));
    await get(t.url('/_matrix/identity/versions'));
    const requests = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e['msg'] === 'request');
    expect(requests.map((e) => e['url'])).toEqual(['/_matrix/identity/versions']);

    const debugLines: string[] = [];
    const d = await start({ log: pino({ level: 'debug' }, { write: (l: string) => void debugLines.push(l) }) });
    await get(d.url('/health'));
    const debug = debugLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e['msg'] === 'request');
    expect(debug).toEqual([expect.objectContaining({ level: 20, url: '/health', status: 200, listener: 'client' })]);
  });
});
