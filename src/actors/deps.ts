import type { InspectionEvent, Observer } from 'xstate';
import type { Clock } from '../clock.js';
import type { SydentConfig } from '../config/types.js';
import type { ServerIdentity } from '../identity.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import type { TlsLoad } from '../replication/tls.js';

/**
 * What the root actor hands to its supervisors: each takes the part it owns. No handle on any resource: the store
 * supervisor opens the database from `config`, and the others reach it through its facades.
 */
export interface SystemDeps {
  config: SydentConfig;
  clock: Clock;
  log: Logger;
  identity: ServerIdentity;
  metrics?: Metrics;
  /** the replication certificate as the server loaded it for its listener (loaded from `config` when absent) */
  replicationTls?: TlsLoad;
  /** `--inspect`: every actor's events go here (redacted by the inspector) */
  inspect?: ActorInspect;
}

export type ActorInspect = Observer<InspectionEvent> | ((event: InspectionEvent) => void);
