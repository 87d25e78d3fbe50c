/**
 * undici, loaded with the first outbound request (homeserver, SMS provider, replication peer) rather than at
 * start-up: it is over a hundred modules, and many servers make no such request for a long while.
 */
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const require = createRequire(import.meta.url);
let loaded: typeof Undici | undefined;

export function undici(): typeof Undici {
  return (loaded ??= require('undici') as typeof Undici);
}

/** A value made on first use: the agents below are created when the first request needs them. */
export function lazy<T>(make: () => T): { get(): T; ifMade(): T | undefined } {
  let value: T | undefined;
  let made = false;
  return {
    get() {
      if (!made) {
        value = make();
        made = true;
      }
      return value as T;
    },
    ifMade: () => (made ? value : undefined),
  };
}
