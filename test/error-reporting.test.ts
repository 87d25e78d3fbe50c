/**
 * `sentry_dsn`: errors logged go to Sentry, checked against a loopback server that receives the envelopes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startErrorReporter } from '../src/error-reporter.js';
import { openLog } from '../src/log.js';
import { freePort, ROOT, spawnServer, waitForStart, type ServerProcess } from './helpers/process.js';
import { startSentryServer, type SentryTestServer } from './helpers/sentry.js';
import { tempDir } from './helpers/tmp.js';

const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function sentry(): Promise<SentryTestServer> {
  const s = await startSentryServer();
  cleanups.push(() => s.close());
  return s;
}

describe('errors to Sentry', () => {
  it('sends each line logged at error, tagged as Sydent tags it, and nothing but the error', async () => {
    const s = await sentry();
    const reporter = startErrorReporter({ dsn: s.dsn, serverName: 'is.example.test', release: VERSION });
    const sink = { write: () => true };
    const { log, close } = openLog({
      level: 'INFO',
      path: '',
      stream: sink as unknown as NodeJS.WritableStream,
      reporter,
    });
    log.warn({ token: 'warn-secret' }, 'only a warning');
    log.error({ err: new TypeError('boom'), client_secret: 'field-secret' }, 'something broke');
    log.child({ listener: 'client' }).error('no error object here');
    await close();

    expect(s.events).toHaveLength(2);
    const [first, second] = s.events;
    expect(first!.path).toBe('/api/42/envelope/');
    expect(first!.key).toBe('publickey');
    expect(first!.event).toMatchObject({
      level: 'error',
      release: `sydent-ts@${VERSION}`,
      server_name: 'is.example.test',
      tags: { sydent_server_name: 'is.example.test' },
      exception: { values: [{ type: 'TypeError', value: 'boom', stacktrace: { frames: expect.any(Array) } }] },
    });
    expect(second!.event).toMatchObject({
      level: 'error',
      message: 'no error object here',
      tags: { sydent_server_name: 'is.example.test' },
    });
    // The log line's other fields, and the warning, never leave.
    const sent = JSON.stringify(s.events);
    expect(sent).not.toContain('field-secret');
    expect(sent).not.toContain('warn-secret');
    expect(sent).not.toContain('only a warning');
  });

  it('is set up by sentry_dsn when sydent-ts runs as a process', { timeout: 60_000 }, async () => {
    const s = await sentry();
    const t = tempDir();
    cleanups.push(t.cleanup);
    const port = await freePort();
    const terms = path.join(t.dir, 'terms.yaml');
    fs.writeFileSync(
      terms,
      'master_version: "m1"\ndocs:\n  tos:\n    version: "1"\n    langs:\n      en: {name: "Terms", url: "https://example.org/tos"}\n',
    );
    fs.writeFileSync(
      path.join(t.dir, 'sydent.conf'),
      `[general]\nserver.name = sentry.example.test\nsentry_dsn = ${s.dsn}\nterms.path = ${terms}\n[http]\nclientapi.http.bind_address = 127.0.0.1\nclientapi.http.port = ${port}\n`,
    );
    const p: ServerProcess = spawnServer({ cwd: t.dir });
    cleanups.push(() => p.child.kill('SIGKILL'));
    await waitForStart(p);
    // An operator's broken edit of the terms file is logged at error when it is next read.
    await new Promise((r) => setTimeout(r, 1100));
    fs.writeFileSync(terms, 'docs: [unclosed\n');
    const res = await fetch(`http://127.0.0.1:${port}/_matrix/identity/v2/terms`);
    expect(res.status).toBe(200);
    const got = await s.waitForEvent();
    expect(got.event).toMatchObject({
      release: `sydent-ts@${VERSION}`,
      tags: { sydent_server_name: 'sentry.example.test' },
      exception: { values: [expect.objectContaining({ value: expect.any(String) })] },
    });
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
  });
});
