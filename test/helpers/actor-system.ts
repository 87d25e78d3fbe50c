/**
 * The actor system started on its own, without the HTTP server, for tests that watch or meddle with what its actors
 * send each other. The config goes through the real loader; the log is silent and the clock a ManualClock.
 *
 *   const cleanups: (() => unknown)[] = [];   // run in reverse after each test
 *   const { config, dbFile } = freshConfig(cleanups);
 *   const system = startActorSystem(config, (event) => ..., cleanups);
 */
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import type { InspectionEvent } from 'xstate';
import { ActorSystem } from '../../src/actors/system.js';
import { ManualClock } from '../../src/clock.js';
import { loadConfig } from '../../src/config/index.js';
import type { SydentConfig } from '../../src/config/types.js';
import { identityFromConfig } from '../../src/identity.js';
import type { Cleanups } from './cleanups.js';
import { tempDir } from './tmp.js';

/** A config of a server with a fresh database in a temp directory of its own, which `cleanups` removes. */
export function freshConfig(cleanups: Cleanups): { config: SydentConfig; dbFile: string } {
  const tmp = tempDir();
  cleanups.push(() => tmp.cleanup());
  const dbFile = path.join(tmp.dir, 'sydent.db');
  const confPath = path.join(tmp.dir, 'sydent.conf');
  fs.writeFileSync(confPath, `[general]\nserver.name = is.example.test\n[db]\ndb.file = ${dbFile}\n`);
  return { config: loadConfig({ configPath: confPath, env: {}, cwd: tmp.dir }).config, dbFile };
}

/** The actor system on `config`, its inspection events given to `inspect`; `cleanups` stops it. */
export function startActorSystem(
  config: SydentConfig,
  inspect: (event: InspectionEvent) => void,
  cleanups: Cleanups,
): ActorSystem {
  const system = ActorSystem.start({
    config,
    clock: new ManualClock(Date.now()),
    log: pino({ level: 'silent' }),
    identity: identityFromConfig(config),
    inspect,
  });
  cleanups.push(() => system.stop());
  return system;
}
