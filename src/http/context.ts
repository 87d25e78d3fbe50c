import type { Facades } from '../actors/facade.js';
import type { ActorSystem } from '../actors/system.js';
import type { Clock } from '../clock.js';
import type { SydentConfig } from '../config/types.js';
import type { Readiness } from '../health.js';
import type { ServerIdentity } from '../identity.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import type { StoreReads } from '../store/index.js';
import type { TermsSource } from '../terms/terms.js';

export type { ServerIdentity };

/** What route plugins need: handed to each as plugin options. */
export interface AppContext {
  config: SydentConfig;
  /** the actors, for the debug endpoints (their list and pages); everything else goes through `facades` */
  system: ActorSystem;
  /** every supervisor's typed facade: how a route asks for work */
  facades: Facades;
  clock: Clock;
  identity: ServerIdentity;
  /** the store's read facade (handed out by the store supervisor); writes go through `facades.stores` */
  reads: StoreReads;
  terms: TermsSource;
  log: Logger;
  /** present only when the Prometheus listener is configured */
  metrics?: Metrics;
  /** what `GET /ready` reports */
  readiness: Readiness;
}

/** The API prefixes an endpoint group can be mounted under. */
export const V1_PREFIX = '/_matrix/identity/api/v1';
export const V2_PREFIX = '/_matrix/identity/v2';

export interface RouteOptions {
  ctx: AppContext;
  /** which API the routes are mounted for */
  api: 'v1' | 'v2';
}
