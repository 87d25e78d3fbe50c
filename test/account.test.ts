import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFederationEnv, mergeConf, type FederationEnv } from './helpers/federation-env.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { rows } from './helpers/rows.js';

const TERMS = `
master_version: "master_1_1"
docs:
  terms_of_service:
    version: "2.0"
    langs:
      en: {name: "Terms of Service", url: "https://example.org/tos-2.0-en.html"}
      fr: {name: "Conditions d'utilisation", url: "https://example.org/tos-2.0-fr.html"}
  privacy_policy:
    version: "1.2"
    langs:
      en: {name: "Privacy Policy", url: "https://example.org/pp-1.2-en.html"}
      fr: {name: "Politique de confidentialite", url: "https://example.org/pp-1.2-fr.html"}
`;

let env: FederationEnv;
let t: TestServer;

/** OpenID tokens the homeserver knows, and whose they are. */
const openIdTokens = new Map<string, unknown>();

beforeAll(async () => {
  env = await startFederationEnv({
    'GET /_matrix/federation/v1/openid/userinfo': (req) => {
      const token = new URL(req.url, 'https://x').searchParams.get('access_token') ?? '';
      const sub = openIdTokens.get(token);
      if (sub === undefined)
        return { status: 401, json: { errcode: 'M_UNKNOWN_TOKEN', error: 'Invalid access token' } };
      return { json: typeof sub === 'string' ? { sub } : sub };
    },
  });
  openIdTokens.set('alice-openid', `@alice:${env.serverName}`);
  openIdTokens.set('bob-openid', `@bob:${env.serverName}`);
  openIdTokens.set('carol-openid', `@carol:${env.serverName}`);
  openIdTokens.set('dave-openid', `@dave:${env.serverName}`);
  openIdTokens.set('liar-openid', '@mallory:evil.example');
  openIdTokens.set('nosub-openid', { user: 'x' });
  const termsFile = path.join(env.caFile, '..', 'terms.yaml');
  fs.writeFileSync(termsFile, TERMS);
  t = await startTestServer({ conf: mergeConf(env.conf, { general: { 'terms.path': termsFile } }) });
});

afterAll(async () => {
  await t?.close();
  await env?.close();
});

const v2 = (p: string) => t.url(`/_matrix/identity/v2${p}`);

async function post(
  url: string,
  body: unknown,
  token?: string,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function get(url: string, token?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** Every row of `table`. */
function tableRows(table: string, server = t): Record<string, unknown>[] {
  return rows(server, `SELECT * FROM ${table}`);
}

async function register(openIdToken: string, serverName = env.serverName, server = t) {
  return post(server.url('/_matrix/identity/v2/account/register'), {
    access_token: openIdToken,
    token_type: 'Bearer',
    matrix_server_name: serverName,
    expires_in: 3600,
  });
}

describe('POST /account/register', () => {
  it('makes an account from an OpenID token its homeserver vouches for', async () => {
    const res = await register('alice-openid');
    expect(res.status).toBe(200);
    expect(res.json['token']).toMatch(/^[0-9a-zA-Z]{64}$/);
    expect(res.json['access_token']).toBe(res.json['token']);
    const request = env.hs.requests.find((r) => r.url.includes('alice-openid'));
    expect(request?.method).toBe('GET');
    expect(request?.url).toBe('/_matrix/federation/v1/openid/userinfo?access_token=alice-openid');
    expect(request?.headers.host).toBe(env.serverName);
    expect(tableRows('accounts').map((r) => r['user_id'])).toContain(`@alice:${env.serverName}`);
    expect(tableRows('tokens')).toContainEqual({ token: res.json['token'], user_id: `@alice:${env.serverName}` });
    const me = await get(v2('/account'), res.json['token'] as string);
    expect(me.status).toBe(403);
    expect(me.json['errcode']).toBe('M_TERMS_NOT_SIGNED');
  });

  it('accepts the server name in any case and issues a new token per registration', async () => {
    const a = await register('bob-openid', env.serverName.toUpperCase());
    const b = await register('bob-openid');
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    expect(a.json['token']).not.toBe(b.json['token']);
    expect(tableRows('accounts').filter((r) => r['user_id'] === `@bob:${env.serverName}`)).toHaveLength(1);
  });

  it('refuses a user ID that belongs to another server, storing nothing', async () => {
    const before = tableRows('tokens').length;
    const res = await register('liar-openid');
    expect(res.status).toBe(500);
    expect(res.json).toEqual({
      errcode: 'M_UNKNOWN',
      error: 'The Matrix homeserver returned a MXID belonging to another homeserver',
    });
    expect(tableRows('tokens')).toHaveLength(before);
    expect(tableRows('accounts').map((r) => r['user_id'])).not.toContain('@mallory:evil.example');
  });

  it('refuses an OpenID token the homeserver does not know', async () => {
    const before = tableRows('tokens').length;
    const res = await register('forged');
    expect(res.status).toBe(401);
    expect(res.json['errcode']).toBe('M_UNKNOWN_TOKEN');
    expect(tableRows('tokens')).toHaveLength(before);
  });

  it('says what failed when the answer has no sub', async () => {
    const res = await register('nosub-openid');
    expect(res.status).toBe(500);
    expect(res.json).toEqual({
      errcode: 'M_UNKNOWN',
      error: "The Matrix homeserver did not include 'sub' in its response",
    });
  });

  it('refuses invalid server names without contacting anyone', async () => {
    const before = env.hs.requests.length;
    for (const name of ['', 'has space', 'hs.test:0', 'hs.test:65536', 'hs.test:080', 'a/b', '[::1', 'hs.test:port']) {
      const res = await register('alice-openid', name);
      expect(res.status, name).toBe(400);
      expect(res.json['errcode'], name).toMatch(/^M_(INVALID_PARAM|MISSING_PARAMS)$/);
    }
    expect(env.hs.requests).toHaveLength(before);
  });

  it('refuses missing and mistyped fields', async () => {
    const url = v2('/account/register');
    const missing = await post(url, { access_token: 'x' });
    expect(missing).toEqual({
      status: 400,
      json: { errcode: 'M_MISSING_PARAMS', error: 'Missing parameters: matrix_server_name' },
    });
    const none = await post(url, {});
    expect(none.json['errcode']).toBe('M_MISSING_PARAMS');
    const wrongType = await post(url, { access_token: { a: 1 }, matrix_server_name: env.serverName });
    expect(wrongType.status).toBe(400);
    expect(wrongType.json['errcode']).toBe('M_INVALID_PARAM');
    const notJson = await fetch(url, { method: 'POST', body: 'access_token=x' });
    expect(notJson.status).toBe(400);
    expect(((await notJson.json()) as Record<string, unknown>)['errcode']).toBe('M_NOT_JSON');
  });

  it('reports a homeserver that cannot be reached as M_UNKNOWN with the reason', async () => {
    const res = await register('alice-openid', 'hs.test:1');
    expect(res.status).toBe(500);
    expect(res.json['errcode']).toBe('M_UNKNOWN');
    expect(res.json['error']).toMatch(/Unable to contact the Matrix homeserver hs\.test:1/);
  });

  it('refuses homeservers on blacklisted addresses before connecting', async () => {
    const guarded = await startTestServer({
      conf: { http: { 'federation.dns_servers': env.dns.address, 'federation.cacert': env.caFile } },
    });
    try {
      const before = env.hs.connections;
      const res = await register('alice-openid', env.serverName, guarded);
      expect(res.status).toBe(500);
      expect(res.json['errcode']).toBe('M_UNKNOWN');
      expect(env.hs.connections).toBe(before);
      expect(tableRows('tokens', guarded)).toHaveLength(0);
    } finally {
      await guarded.close();
    }
  });

  it('applies homeserver_allow_list', async () => {
    const allowed = await startTestServer({
      conf: mergeConf(env.conf, { general: { homeserver_allow_list: 'other.example', enable_v1_access: 'false' } }),
    });
    try {
      const res = await register('alice-openid', env.serverName, allowed);
      expect(res).toEqual({
        status: 403,
        json: { errcode: 'M_UNAUTHORIZED', error: 'This homeserver is not authorized to access this server.' },
      });
      expect(tableRows('accounts', allowed)).toHaveLength(0);
    } finally {
      await allowed.close();
    }
  });
});

describe('authentication', () => {
  it('401 M_UNAUTHORIZED without a token or with an unknown one, on header and query', async () => {
    expect(await get(v2('/account'))).toEqual({
      status: 401,
      json: { errcode: 'M_UNAUTHORIZED', error: 'Unauthorized' },
    });
    expect((await get(v2('/account'), 'nope')).status).toBe(401);
    expect((await get(v2('/account?access_token=nope'))).status).toBe(401);
    expect((await post(v2('/account/logout'), undefined)).status).toBe(401);
    expect((await post(v2('/terms'), { user_accepts: [] })).status).toBe(401);
  });

  it('takes the token from ?access_token= as well as the header', async () => {
    const { json } = await register('carol-openid');
    const token = json['token'] as string;
    const viaQuery = await get(v2(`/account?access_token=${token}`));
    expect(viaQuery.json['errcode']).toBe('M_TERMS_NOT_SIGNED');
    const accept = await fetch(v2(`/terms?access_token=${token}`), {
      method: 'POST',
      body: JSON.stringify({
        user_accepts: ['https://example.org/tos-2.0-en.html', 'https://example.org/pp-1.2-en.html'],
      }),
    });
    expect(accept.status).toBe(200);
    expect(await get(v2(`/account?access_token=${token}`))).toEqual({
      status: 200,
      json: { user_id: `@carol:${env.serverName}` },
    });
  });
});

describe('terms', () => {
  it('GET /terms needs no token and lists every document and language', async () => {
    const res = await get(v2('/terms'));
    expect(res.status).toBe(200);
    expect(res.json).toEqual({
      policies: {
        terms_of_service: {
          version: '2.0',
          en: { name: 'Terms of Service', url: 'https://example.org/tos-2.0-en.html' },
          fr: { name: "Conditions d'utilisation", url: 'https://example.org/tos-2.0-fr.html' },
        },
        privacy_policy: {
          version: '1.2',
          en: { name: 'Privacy Policy', url: 'https://example.org/pp-1.2-en.html' },
          fr: { name: 'Politique de confidentialite', url: 'https://example.org/pp-1.2-fr.html' },
        },
      },
    });
  });

  it('consent is reached across calls, in mixed languages; partial acceptance is not enough', async () => {
    const token = (await register('dave-openid')).json['token'] as string;
    const userId = `@dave:${env.serverName}`;
    expect(await post(v2('/terms'), { user_accepts: ['https://example.org/tos-2.0-fr.html'] }, token)).toEqual({
      status: 200,
      json: {},
    });
    expect((await get(v2('/account'), token)).json['errcode']).toBe('M_TERMS_NOT_SIGNED');
    expect(tableRows('accounts').find((r) => r['user_id'] === userId)?.['consent_version']).toBeNull();
    // The client need not send what it accepted before: acceptance accumulates.
    expect((await post(v2('/terms'), { user_accepts: ['https://example.org/pp-1.2-en.html'] }, token)).status).toBe(
      200,
    );
    expect(await get(v2('/account'), token)).toEqual({ status: 200, json: { user_id: userId } });
    expect(tableRows('accounts').find((r) => r['user_id'] === userId)?.['consent_version']).toBe('master_1_1');
    expect(
      tableRows('accepted_terms_urls')
        .filter((r) => r['user_id'] === userId)
        .map((r) => r['url'])
        .sort(),
    ).toEqual(['https://example.org/pp-1.2-en.html', 'https://example.org/tos-2.0-fr.html']);
  });

  it('refuses URLs it does not offer, storing nothing', async () => {
    const token = (await register('alice-openid')).json['token'] as string;
    const before = tableRows('accepted_terms_urls').length;
    const res = await post(
      v2('/terms'),
      { user_accepts: ['https://example.org/tos-2.0-en.html', 'https://evil.example/x'] },
      token,
    );
    expect(res.status).toBe(400);
    expect(res.json).toEqual({ errcode: 'M_INVALID_PARAM', error: 'Unrecognised URLs: https://evil.example/x' });
    expect(tableRows('accepted_terms_urls')).toHaveLength(before);
  });

  it('refuses a malformed acceptance', async () => {
    const token = (await register('alice-openid')).json['token'] as string;
    expect((await post(v2('/terms'), {}, token)).json['errcode']).toBe('M_MISSING_PARAMS');
    expect(
      (await post(v2('/terms'), { user_accepts: 'https://example.org/tos-2.0-en.html' }, token)).json['errcode'],
    ).toBe('M_INVALID_PARAM');
    expect((await post(v2('/terms'), { user_accepts: [1, 2] }, token)).json['errcode']).toBe('M_INVALID_PARAM');
  });

  it('with no terms configured, nothing is gated and GET /terms is empty', async () => {
    const open = await startTestServer({ conf: env.conf });
    try {
      expect(await get(open.url('/_matrix/identity/v2/terms'))).toEqual({ status: 200, json: { policies: {} } });
      const token = (await register('alice-openid', env.serverName, open)).json['token'] as string;
      expect(await get(open.url('/_matrix/identity/v2/account'), token)).toEqual({
        status: 200,
        json: { user_id: `@alice:${env.serverName}` },
      });
      const accept = await post(
        open.url('/_matrix/identity/v2/terms'),
        { user_accepts: ['https://example.org/x'] },
        token,
      );
      expect(accept.status).toBe(400);
    } finally {
      await open.close();
    }
  });
});

describe('POST /account/logout', () => {
  it('needs no body and no accepted terms, and the token is refused afterwards', async () => {
    const token = (await register('alice-openid')).json['token'] as string;
    const res = await fetch(v2('/account/logout'), { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({});
    expect(tableRows('tokens').map((r) => r['token'])).not.toContain(token);
    expect((await get(v2('/account'), token)).status).toBe(401);
    expect((await post(v2('/account/logout'), undefined, token)).status).toBe(401);
  });
});
