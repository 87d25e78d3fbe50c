import type { ActorSystem } from '../actors/system.js';
import type { Clock } from '../clock.js';
import type { SigningKey, SydentConfig } from '../config/types.js';
import type { StoreReads } from '../store/index.js';
import type { TermsSource } from '../terms/terms.js';

/** The long-term signing identity of this server. */
export interface ServerIdentity {
  serverName: string;
  key: SigningKey;
  /** `ed25519:<version>` */
  keyId: string;
  publicKey: Uint8Array;
  /** standard unpadded base64, as Sydent publishes it */
  publicKeyBase64: string;
}

/** What route plugins need: handed to each as plugin options. */
export interface AppContext {
  config: SydentConfig;
  system: ActorSystem;
  clock: Clock;
  identity: ServerIdentity;
  /** prepared-statement reads; writes go through the store actor */
  reads: StoreReads;
  terms: TermsSource;
}

/** The API prefixes an endpoint group can be mounted under. */
export const V1_PREFIX = '/_matrix/identity/api/v1';
export const V2_PREFIX = '/_matrix/identity/v2';

export interface RouteOptions {
  ctx: AppContext;
  /** which API the routes are mounted for */
  api: 'v1' | 'v2';
}
