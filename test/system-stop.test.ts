/**
 * Shutdown with work that will not finish in time (a mail server that stalls): the actors are given their time to
 * drain, then what is left is aborted, not left running, and the database is closed all the same.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ActorSystem, CLOSE_GRACE_MS } from '../src/actors/system.js';
import { ManualClock } from '../src/clock.js';
import { loadConfig } from '../src/config/index.js';
import { identityFromConfig } from '../src/identity.js';
import { emailConf } from './helpers/email.js';
import { startSlowSmtpServer } from './helpers/smtp.js';
import { tempDir } from './helpers/tmp.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('stopping the actor system', () => {
  it('with a mail stalled mid-send: stops within its drain time, the send is aborted (no late mail), the database is closed', async () => {
    const slow = await startSlowSmtpServer({ dataDelayMs: 3_000 });
    cleanups.push(() => slow.close());
    const tmp = tempDir();
    cleanups.push(() => tmp.cleanup());
    const dbFile = path.join(tmp.dir, 'sydent.db');
    const email = Object.entries(emailConf(slow.port))
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n');
    fs.writeFileSync(
      path.join(tmp.dir, 'sydent.conf'),
      `[general]\nserver.name = is.example.test\n[db]\ndb.file = ${dbFile}\n[email]\n${email}\n`,
    );
    const { config } = loadConfig({ configPath: path.join(tmp.dir, 'sydent.conf'), env: {}, cwd: tmp.dir });
    const lines: string[] = [];
    const system = ActorSystem.start({
      config,
      clock: new ManualClock(Date.now()),
      log: pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) }),
      identity: identityFromConfig(config),
    });

    const deadline = Date.now() + 20_000;
    const requested = system.facades.sessions
      .requestToken(
        {
          medium: 'email',
          address: 'stalled@example.org',
          sendTo: 'stalled@example.org',
          clientSecret: 'stalled',
          sendAttempt: 1,
          nextLink: null,
          brand: null,
          requester: '127.0.0.1',
          ipAddress: '127.0.0.1',
          deadline,
        },
        { deadline },
      )
      .catch((error: unknown) => error);
    // The mail is waiting for the server's answer to DATA.
    for (let i = 0; i < 200 && slow.dataCommands === 0; i++) await sleep(10);
    expect(slow.dataCommands).toBe(1);

    const began = Date.now();
    await system.stop({ until: began + 300 });
    // One deadline for every supervisor: at it what was left was aborted, and the others closed within the grace.
    expect(Date.now() - began).toBeLessThan(300 + CLOSE_GRACE_MS + 700);
    expect(system.status).toBe('stopped');
    expect(await requested).toBeInstanceOf(Error);
    expect(lines.some((l) => l.includes('did not drain in time'))).toBe(true);
    // Closed: the last connection's close folds the write-ahead log back into the file and removes it.
    expect(fs.existsSync(`${dbFile}-wal`)).toBe(false);

    // Past the server's delay: the mail was not sent after all.
    await sleep(3_500);
    expect(slow.messages).toEqual([]);
  }, 20_000);
});
