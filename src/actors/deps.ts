import type Database from 'better-sqlite3';
import type { InspectionEvent, Observer } from 'xstate';
import type { Clock } from '../clock.js';
import type { SydentConfig } from '../config/types.js';
import type { ServerIdentity } from '../identity.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import type { ReadSnapshot } from '../store/lookup-connection.js';

/** What the root actor hands to its supervisors: each takes the part it owns. */
export interface SystemDeps {
  config: SydentConfig;
  db: Database.Database;
  clock: Clock;
  log: Logger;
  identity: ServerIdentity;
  /** the lookups' read snapshot: the store actor ends it after each write (see store/lookup-connection.ts) */
  lookupSnapshot?: ReadSnapshot;
  metrics?: Metrics;
  /** `--inspect`: every actor's events go here (redacted by the inspector) */
  inspect?: ActorInspect;
}

export type ActorInspect = Observer<InspectionEvent> | ((event: InspectionEvent) => void);
