import { describe, expect, it } from 'vitest';
import { lookupHash } from '../src/crypto/index.js';
import { rotatePepperMain } from '../src/store/rotate-pepper.js';
import { startFederationEnv, mergeConf } from './helpers/federation-env.js';
import { startTestServer } from './helpers/server.js';
import { ManualClock } from '../src/clock.js';

describe('sydent-ts rotate-pepper', () => {
  it('changes the pepper and re-hashes every association; the old pepper is refused, the new one finds them', async () => {
    const env = await startFederationEnv({
      'GET /_matrix/federation/v1/openid/userinfo': () => ({ json: { sub: `@alice:${env.serverName}` } }),
    });
    const t = await startTestServer({ conf: mergeConf(env.conf), clock: new ManualClock(Date.now()) });
    try {
      const post = async (url: string, body: unknown, token?: string) => {
        const res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
          body: JSON.stringify(body),
        });
        return { status: res.status, json: (await res.json()) as Record<string, unknown> };
      };
      const token = (
        await post(t.url('/_matrix/identity/v2/account/register'), {
          access_token: 'x',
          matrix_server_name: env.serverName,
        })
      ).json['token'] as string;
      for (const address of ['a@example.org', 'b@example.org']) {
        expect(
          (
            await post(t.internalUrl('/_matrix/identity/internal/bind'), {
              medium: 'email',
              address,
              mxid: `@${address[0]}:hs`,
            })
          ).status,
        ).toBe(200);
      }
      const details = async () =>
        (await (
          await fetch(t.url('/_matrix/identity/v2/hash_details'), { headers: { authorization: `Bearer ${token}` } })
        ).json()) as {
          lookup_pepper: string;
        };
      const old = (await details()).lookup_pepper;

      const out: string[] = [];
      const code = await rotatePepperMain(['--config', `${t.dir}/sydent.conf`, 'rotate-pepper'], {
        stdout: (s) => out.push(s),
        stderr: (s) => out.push(s),
        env: {},
        cwd: t.dir,
      });
      expect(code).toBe(0);
      expect(out.join('')).toContain('2 associations re-hashed');

      // The server notices within a second (at once on PostgreSQL, which signals it).
      await new Promise((r) => setTimeout(r, 1100));
      const fresh = (await details()).lookup_pepper;
      expect(fresh).not.toBe(old);
      expect(fresh).toMatch(/^[0-9a-zA-Z]{5}$/);
      const stale = await post(
        t.url('/_matrix/identity/v2/lookup'),
        { algorithm: 'sha256', pepper: old, addresses: [lookupHash('a@example.org', 'email', old)] },
        token,
      );
      expect(stale.status).toBe(400);
      expect(stale.json).toMatchObject({ errcode: 'M_INVALID_PEPPER', lookup_pepper: fresh });
      const found = await post(
        t.url('/_matrix/identity/v2/lookup'),
        {
          algorithm: 'sha256',
          pepper: fresh,
          addresses: [lookupHash('a@example.org', 'email', fresh), lookupHash('b@example.org', 'email', fresh)],
        },
        token,
      );
      expect(found.json['mappings']).toEqual({
        [lookupHash('a@example.org', 'email', fresh)]: '@a:hs',
        [lookupHash('b@example.org', 'email', fresh)]: '@b:hs',
      });
    } finally {
      await t.close();
      await env.close();
    }
  });
});
