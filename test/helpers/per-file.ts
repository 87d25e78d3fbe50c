/**
 * What a whole test file shares, started in one place instead of a `let`, a beforeAll and an afterAll in each file:
 *
 *   const smtp = smtpServerForFile();
 *   const t = testServerForFile(() => ({ conf: { email: emailConf(smtp.port) } }));
 *
 * Each server starts in the file's beforeAll and closes in its afterAll. Vitest runs the afterAll hooks in the
 * reverse order of their registration, so what is declared later (a server using the SMTP server) closes first.
 */
import { afterAll, beforeAll } from 'vitest';
import { startFederationEnv, type FederationEnv } from './federation-env.js';
import type { RouteHandler } from './homeserver.js';
import { startTestServer, type TestServer, type TestServerOptions } from './server.js';
import { startOpenMarket, OM_CREDS, type FakeSmsGateway } from './sms-providers.js';
import { startSmtpServer, type SmtpServerOptions, type SmtpTestServer } from './smtp.js';

/**
 * What `start` gives, shared by the file's tests. The tests hold a stand-in from the start (their module runs before
 * any hook): it forwards each read to the started value, and a read before the beforeAll ran throws instead of
 * answering undefined. Reads, writes and `in` go through; its own keys do not, so spread it or compare it whole
 * (`{ ...t }`, `Object.keys(t)`, `toEqual(t)`) and it is an empty object.
 */
export function sharedByFile<T extends object>(start: () => Promise<T>, stop: (started: T) => Promise<void>): T {
  let started: T | undefined;
  beforeAll(async () => {
    started = await start();
  });
  afterAll(async () => {
    if (started) await stop(started);
  });
  const current = (key: PropertyKey): T => {
    if (!started) throw new Error(`.${String(key)} of a value the file shares, used before its beforeAll started it`);
    return started;
  };
  return new Proxy({} as T, {
    get(_stand, key) {
      const target = current(key);
      const value: unknown = Reflect.get(target, key, target);
      // bound: a method that uses `this` (a class's, with private fields) would fail on the stand-in
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
    // a test sets a server's switches (`om.hang = true`) on the server itself
    set: (_stand, key, value) => Reflect.set(current(key), key, value),
    has: (_stand, key) => Reflect.has(current(key), key),
  });
}

/** A loopback SMTP server (test/helpers/smtp.ts) for the file. */
export function smtpServerForFile(opts?: SmtpServerOptions): SmtpTestServer {
  return sharedByFile(
    () => startSmtpServer(opts),
    (smtp) => smtp.close(),
  );
}

/** An OpenMarket gateway (test/helpers/sms-providers.ts) taking `OM_CREDS`, for the file. */
export function openMarketForFile(): FakeSmsGateway {
  return sharedByFile(
    () => startOpenMarket(OM_CREDS),
    (om) => om.close(),
  );
}

/** A loopback homeserver world (test/helpers/federation-env.ts) answering `routes`, for the file. */
export function federationEnvForFile(routes: Record<string, RouteHandler> = {}): FederationEnv {
  return sharedByFile(
    () => startFederationEnv(routes),
    (env) => env.close(),
  );
}

/**
 * A sydent-ts for the file. Its options are asked for once the servers declared before it have started, so that
 * its config can name their ports.
 */
export function testServerForFile(options: () => TestServerOptions = () => ({})): TestServer {
  return sharedByFile(
    () => startTestServer(options()),
    (t) => t.close(),
  );
}
