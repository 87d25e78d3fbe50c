import type { ActorSystem } from '../actors/system.js';
import type { Clock } from '../clock.js';
import type { SydentConfig } from '../config/types.js';
import type { BinderDeps } from '../bindings/binder.js';
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
  system: ActorSystem;
  clock: Clock;
  identity: ServerIdentity;
  /** prepared-statement reads; writes go through the store actor */
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

/** What the binding functions (src/bindings) need from a request's context: the actors, our key, time, the log. */
export function binderDeps(ctx: AppContext): BinderDeps {
  return { system: ctx.system.root.system, identity: ctx.identity, clock: ctx.clock, log: ctx.log };
}
