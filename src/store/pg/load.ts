/**
 * The PostgreSQL engine is loaded only when configured: the driver is start-up time SQLite deployments need not
 * pay. src/server.ts loads it (asynchronously) before the actors start; the store supervisor, which opens
 * synchronously, then takes it from here.
 */
import type * as PgEngine from './store.js';

type PgEngineModule = typeof PgEngine;

let loaded: PgEngineModule | null = null;

export async function loadPgEngine(): Promise<PgEngineModule> {
  loaded ??= await import('./store.js');
  return loaded;
}

export function loadedPgEngine(): PgEngineModule {
  if (!loaded) throw new Error('the PostgreSQL engine was not loaded before the store opened (src/server.ts loads it)');
  return loaded;
}
