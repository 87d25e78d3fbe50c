/**
 * A server ready for v2 lookups: an account with a token and the current pepper, and one address bound through the
 * internal API, with its sha256 lookup hash. Shared by the lookup tests that need exactly that.
 */
import { expect } from 'vitest';
import { mergeConf, startFederationEnv, type FederationEnv } from './federation-env.js';
import { internal, lookupPepper, registerAccount, sha256Of } from './flows.js';
import { sharedByFile } from './per-file.js';
import { startTestServer, type TestServer } from './server.js';

export interface LookupFixture {
  env: FederationEnv;
  t: TestServer;
  token: string;
  pepper: string;
  /** the bound address's lookup hash */
  hit: string;
}

export async function startLookupFixture(o: {
  addressLookupLimit: number;
  localpart: string;
  address: string;
  mxid: string;
  /** more configuration, merged into the server's */
  conf?: Record<string, Record<string, string>>;
}): Promise<LookupFixture> {
  const env = await startFederationEnv({});
  const t = await startTestServer({
    conf: mergeConf(env.conf, { general: { address_lookup_limit: String(o.addressLookupLimit) } }, o.conf ?? {}),
  });
  const token = await registerAccount(t, env, o.localpart);
  const pepper = await lookupPepper(t, token);
  const bound = await internal(t, 'bind', { medium: 'email', address: o.address, mxid: o.mxid });
  expect(bound.status, bound.text).toBe(200);
  return { env, t, token, pepper, hit: sha256Of(o.address, 'email', pepper) };
}

/**
 * The fixture shared by a whole test file (test/helpers/per-file.ts). `options` is asked for once the servers
 * declared before it have started, so that its configuration can name their ports.
 */
export function lookupFixtureForFile(options: () => Parameters<typeof startLookupFixture>[0]): LookupFixture {
  return sharedByFile(
    () => startLookupFixture(options()),
    async ({ t, env }) => {
      await t.close();
      await env.close();
    },
  );
}
