/**
 * Every route of the client and internal listeners with the inputs a broken or hostile client sends: each field
 * missing, of the wrong type, empty, huge, with a NUL or a lone surrogate; the body not UTF-8, not JSON, or nested
 * deeper than anything walks; the query with a parameter given twice, invalid percent-encoding, invalid UTF-8 or a
 * NUL. Each answer must be a 4xx Matrix error (JSON `{errcode, error}`, with CORS on the client listener, never a
 * 5xx), and nothing may change: not a row of the database, not a mail at the SMTP server, not an SMS at the gateway,
 * not a request to the homeserver. A few routes answer some of these with a negative answer by design (`isvalid` says `valid: false`):
 * those are listed with the answer expected. The replication listener's table is in replication-push.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { emailConf, type Reply } from './helpers/email.js';
import { mergeConf, startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import {
  INTERNAL,
  V1,
  V2,
  databaseSnapshot,
  lookupPepper,
  registerAccount,
  requestEmailToken,
  sha256Of,
  userIdOf,
  validateEmail,
} from './helpers/flows.js';
import { inviteBody, readInviteMail, storeInvite } from './helpers/invites.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import {
  loopbackAllowed,
  OM_CREDS,
  openMarketConf,
  startOpenMarket,
  type FakeSmsGateway,
} from './helpers/sms-providers.js';
import { startSmtpServer, type SmtpTestServer } from './helpers/smtp.js';

let smtp: SmtpTestServer;
let om: FakeSmsGateway;
let env: FederationEnv;
let t: TestServer;
/** the v2 access token of `user` */
let token: string;
let user: string;
let pepper: string;
/** a session with a token sent, not validated */
let pending: { sid: string; secret: string; token: string };
/** a validated session of `validatedAddress` */
let validated: { sid: string; secret: string };
const validatedAddress = 'validated.sweep@example.org';
/** an invite's token and ephemeral private key, for sign-ed25519 */
let invite: { token: string; privateKey: string };

beforeAll(async () => {
  [smtp, om, env] = await Promise.all([startSmtpServer(), startOpenMarket(OM_CREDS), startFederationEnv({})]);
  t = await startTestServer({
    conf: mergeConf(env.conf, { general: loopbackAllowed, email: emailConf(smtp.port), sms: openMarketConf(om) }),
  });
  token = await registerAccount(t, env, 'sweeper');
  user = userIdOf(env, 'sweeper');
  pepper = await lookupPepper(t, token);
  const p = await requestEmailToken(t, smtp, {
    email: 'pending.sweep@example.org',
    clientSecret: 'pendingsecret',
    api: 'v2',
    token,
  });
  pending = { sid: p.sid, secret: 'pendingsecret', token: p.mailToken };
  validated = {
    sid: await validateEmail(t, smtp, { email: validatedAddress, clientSecret: 'validatedsecret', api: 'v2', token }),
    secret: 'validatedsecret',
  };
  const stored = await storeInvite(t, 'v1', inviteBody({ address: 'sweep.invitee@example.org' }));
  expect(stored.status, stored.text).toBe(200);
  const mail = readInviteMail(await smtp.waitForMessage((m) => m.raw.includes(stored.json['token'] as string)));
  invite = { token: mail.token, privateKey: mail.privateKey };
});
afterAll(async () => {
  await t?.close();
  await Promise.all([smtp?.close(), om?.close(), env?.close()]);
});

/**
 * What a field takes: a string, a number (or its digits as a string), a list, an object; or an optional string, which
 * may be left out or null (and, for display fields, be of another type: ignored, as Sydent did).
 */
type Kind = 'string' | 'number' | 'list' | 'object' | 'optional';

interface Route {
  method: 'GET' | 'POST';
  /** `internal:` paths are on the internal listener */
  path: string;
  auth?: boolean;
  /** a valid body: each variant spoils one field of it */
  body?: () => Record<string, unknown>;
  /** a valid query string: each variant spoils one parameter of it */
  query?: () => Record<string, string>;
  /** the fields (of the body, else of the query) to spoil */
  fields?: Record<string, Kind>;
  /** what a wrong value may be answered with besides M_INVALID_PARAM and M_MISSING_PARAMS */
  codes?: string[];
  /** variants answered by design with a negative answer rather than an error: the 200 body expected */
  accepts?: Record<string, unknown>;
}

const HUGE = 'x'.repeat(100_000);
/** a huge query value, within the request-line limit (beyond it: 431, tested in http-parser-errors.test.ts) */
const LONG_QUERY_VALUE = 'x'.repeat(10_000);
const BAD_VALUES: Record<Kind, Record<string, unknown>> = {
  string: { number: 12345, true: true, object: {}, list: [], null: null },
  number: { 'not a number': 'x', fraction: 1.5, true: true, object: {}, list: [], null: null },
  list: {
    string: 'x',
    number: 12345,
    object: {},
    null: null,
    'list of numbers': [1, 2],
    'list with a NUL': ['a\u0000b'],
  },
  object: { string: 'x', number: 12345, list: [], null: null, 'object with a NUL': { medium: 'email\u0000' } },
  optional: {},
};

const ROUTES: Route[] = [
  { method: 'GET', path: '/_matrix/identity/versions' },
  { method: 'GET', path: V2 },
  { method: 'GET', path: V1 },
  ...(['v1', 'v2'] as const).flatMap((api): Route[] => {
    const prefix = api === 'v1' ? V1 : V2;
    const auth = api === 'v2';
    const mxid = (): string => (api === 'v2' ? user : '@sweeper:hs.test');
    return [
      { method: 'GET', path: `${prefix}/pubkey/ed25519:0` },
      ...['/pubkey/isvalid', '/pubkey/ephemeral/isvalid'].map((p): Route => ({
        method: 'GET',
        path: prefix + p,
        query: () => ({ public_key: 'AAAA' }),
        fields: { public_key: 'string' },
        accepts: { 'public_key empty': { valid: false }, 'public_key huge': { valid: false } },
      })),
      {
        method: 'POST',
        path: `${prefix}/validate/email/requestToken`,
        auth,
        body: () => ({
          client_secret: 'sweepsecret',
          email: 'new.sweep@example.org',
          send_attempt: 1,
          next_link: 'https://client.example.org/',
        }),
        fields: { client_secret: 'string', email: 'string', send_attempt: 'number', next_link: 'optional' },
        codes: ['M_INVALID_EMAIL'],
      },
      {
        method: 'POST',
        path: `${prefix}/validate/msisdn/requestToken`,
        auth,
        body: () => ({ client_secret: 'sweepsecret', country: 'GB', phone_number: '07700 900123', send_attempt: 1 }),
        fields: { client_secret: 'string', country: 'string', phone_number: 'string', send_attempt: 'number' },
        codes: ['M_INVALID_ADDRESS'],
      },
      ...['email', 'msisdn'].map((medium): Route => ({
        method: 'POST',
        path: `${prefix}/validate/${medium}/submitToken`,
        auth,
        body: () => ({ sid: pending.sid, client_secret: pending.secret, token: pending.token }),
        fields: { sid: 'number', client_secret: 'string', token: 'string' },
        codes: ['M_TOKEN_INCORRECT'],
      })),
      {
        method: 'GET',
        path: `${prefix}/3pid/getValidated3pid`,
        auth,
        query: () => ({ sid: validated.sid, client_secret: validated.secret }),
        fields: { sid: 'string', client_secret: 'string' },
        codes: ['M_NO_VALID_SESSION'],
      },
      {
        method: 'POST',
        path: `${prefix}/3pid/bind`,
        auth,
        body: () => ({ sid: validated.sid, client_secret: validated.secret, mxid: mxid() }),
        fields: { sid: 'number', client_secret: 'string', mxid: 'string' },
        codes: ['M_NO_VALID_SESSION', ...(api === 'v2' ? ['M_UNAUTHORIZED'] : [])],
      },
      {
        method: 'POST',
        path: `${prefix}/3pid/unbind`,
        body: () => ({
          sid: validated.sid,
          client_secret: validated.secret,
          mxid: mxid(),
          threepid: { medium: 'email', address: validatedAddress },
        }),
        fields: { sid: 'number', client_secret: 'string', mxid: 'string', threepid: 'object' },
        codes: ['M_NO_VALID_SESSION', 'M_FORBIDDEN'],
      },
      {
        method: 'POST',
        path: `${prefix}/store-invite`,
        auth,
        body: () => inviteBody({ address: 'another.invitee@example.org', sender: mxid() }),
        fields: { medium: 'string', address: 'string', room_id: 'string', sender: 'string', room_name: 'optional' },
        codes: ['M_INVALID_EMAIL', 'M_UNRECOGNIZED', ...(api === 'v2' ? ['M_UNAUTHORIZED'] : [])],
      },
      {
        method: 'POST',
        path: `${prefix}/sign-ed25519`,
        auth,
        body: () => ({ mxid: mxid(), token: invite.token, private_key: invite.privateKey }),
        fields: { mxid: 'string', token: 'string', private_key: 'string' },
        codes: ['M_UNRECOGNIZED'],
      },
    ];
  }),
  {
    method: 'POST',
    path: `${V2}/account/register`,
    body: () => ({
      access_token: 'flows-openid-newcomer',
      token_type: 'Bearer',
      matrix_server_name: env.serverName,
      expires_in: 3600,
    }),
    fields: { access_token: 'string', matrix_server_name: 'string' },
    codes: ['M_UNKNOWN_TOKEN'],
  },
  { method: 'GET', path: `${V2}/account`, auth: true },
  { method: 'GET', path: `${V2}/terms` },
  {
    method: 'POST',
    path: `${V2}/terms`,
    auth: true,
    body: () => ({ user_accepts: [] }),
    fields: { user_accepts: 'list' },
  },
  { method: 'GET', path: `${V2}/hash_details`, auth: true },
  {
    method: 'POST',
    path: `${V2}/lookup`,
    auth: true,
    body: () => ({ addresses: [sha256Of('nobody@example.org', 'email', pepper)], algorithm: 'sha256', pepper }),
    fields: { addresses: 'list', algorithm: 'string', pepper: 'string' },
    codes: ['M_INVALID_PEPPER'],
  },
  {
    method: 'GET',
    path: `${V1}/lookup`,
    query: () => ({ medium: 'email', address: 'nobody@example.org' }),
    fields: { medium: 'string', address: 'string' },
    accepts: { 'medium empty': {}, 'medium huge': {}, 'address empty': {}, 'address huge': {} },
  },
  {
    method: 'POST',
    path: `${V1}/bulk_lookup`,
    body: () => ({ threepids: [['email', 'nobody@example.org']] }),
    fields: { threepids: 'list' },
  },
  ...['bind', 'unbind'].map((what): Route => ({
    method: 'POST',
    path: `internal:${INTERNAL}/${what}`,
    body: () => ({ medium: 'email', address: 'internal.sweep@example.org', mxid: '@internal:hs.test' }),
    fields: { medium: 'string', address: 'string', mxid: 'string' },
  })),
  { method: 'GET', path: 'internal:/_sydent/debug/sessions' },
  { method: 'GET', path: 'internal:/_sydent/debug/callbacks', query: () => ({ limit: '10' }) },
  // last: a logout that got through would end the token the routes above use
  { method: 'POST', path: `${V2}/account/logout`, auth: true },
];

interface Variant {
  name: string;
  /** the errcodes it may be answered with */
  expect: string[];
  /** query string (without `?`) and body bytes to send */
  query: string;
  body?: string | Buffer;
}

const encodeQuery = (q: Record<string, string>): string => new URLSearchParams(q).toString();

/** The spoilt requests of one route. */
function variants(route: Route): Variant[] {
  const baseQuery = route.query?.() ?? {};
  const query = encodeQuery(baseQuery);
  const body = route.body?.();
  const fieldCodes = ['M_INVALID_PARAM', 'M_MISSING_PARAMS', ...(route.codes ?? [])];
  const join = (...parts: string[]) => parts.filter(Boolean).join('&');
  const out: Variant[] = [
    // the query string, whatever the route reads from it
    {
      name: 'a parameter given twice',
      expect: ['M_INVALID_PARAM'],
      query: join(query, 'access_token=a&access_token=b'),
      body: json(body),
    },
    {
      name: 'invalid percent-encoding',
      expect: ['M_INVALID_PARAM'],
      query: join(query, 'brand=%ZZ'),
      body: json(body),
    },
    {
      name: 'a truncated percent-escape',
      expect: ['M_INVALID_PARAM'],
      query: join(query, 'brand=%E'),
      body: json(body),
    },
    {
      name: 'invalid UTF-8 in the query',
      expect: ['M_INVALID_PARAM'],
      query: join(query, 'brand=%FF%FE'),
      body: json(body),
    },
    {
      name: 'a lone surrogate in the query (CESU-8)',
      expect: ['M_INVALID_PARAM'],
      query: join(query, 'brand=%ED%A0%80'),
      body: json(body),
    },
    { name: 'a NUL in the query', expect: ['M_INVALID_PARAM'], query: join(query, 'brand=a%00b'), body: json(body) },
  ];
  if (route.method === 'POST') {
    const text = json(body ?? { x: 'y' })!;
    out.push(
      {
        name: 'a body that is not UTF-8',
        expect: ['M_NOT_JSON'],
        query,
        body: Buffer.concat([Buffer.from(text.slice(0, -1)), Buffer.from(',"x":"\xff\xfe"}', 'latin1')]),
      },
      { name: 'a body that is not JSON', expect: ['M_NOT_JSON'], query, body: text.slice(0, -1) },
      { name: 'a NUL in a body key', expect: ['M_INVALID_PARAM'], query, body: `${text.slice(0, -1)},"a\\u0000b":1}` },
      {
        name: 'a key nested 100,000 deep',
        expect: ['M_BAD_JSON'],
        query,
        body: `${text.slice(0, -1)},"deep":${'['.repeat(100_000)}${']'.repeat(100_000)}}`,
      },
    );
  }
  for (const [field, kind] of Object.entries(route.fields ?? {})) {
    if (body) {
      const spoilt = (value: unknown, missing = false): string => {
        const copy: Record<string, unknown> = { ...body };
        if (missing) delete copy[field];
        else copy[field] = value;
        return JSON.stringify(copy);
      };
      const required = kind !== 'optional';
      if (required) out.push({ name: `${field} missing`, expect: fieldCodes, query, body: spoilt(undefined, true) });
      for (const [what, value] of Object.entries(BAD_VALUES[kind])) {
        out.push({ name: `${field} ${what}`, expect: fieldCodes, query, body: spoilt(value) });
      }
      if (kind === 'string' || kind === 'number' || kind === 'optional') {
        if (required) out.push({ name: `${field} empty`, expect: fieldCodes, query, body: spoilt('') });
        out.push(
          { name: `${field} huge`, expect: fieldCodes, query, body: spoilt(HUGE) },
          { name: `${field} with a NUL`, expect: ['M_INVALID_PARAM'], query, body: spoilt('a\u0000b') },
          { name: `${field} with a lone surrogate`, expect: ['M_INVALID_PARAM'], query, body: spoilt('a\ud800b') },
        );
      }
    } else {
      const spoilt = (value: string | undefined, twice = false): string => {
        const copy: Record<string, string> = { ...baseQuery };
        if (value === undefined) delete copy[field];
        else copy[field] = value;
        return encodeQuery(copy) + (twice ? `&${encodeQuery({ [field]: baseQuery[field] ?? '' })}` : '');
      };
      out.push(
        { name: `${field} missing`, expect: fieldCodes, query: spoilt(undefined) },
        { name: `${field} empty`, expect: fieldCodes, query: spoilt('') },
        { name: `${field} huge`, expect: fieldCodes, query: spoilt(LONG_QUERY_VALUE) },
        { name: `${field} given twice`, expect: ['M_INVALID_PARAM'], query: spoilt(baseQuery[field], true) },
        { name: `${field} with a NUL`, expect: ['M_INVALID_PARAM'], query: spoilt(undefined) + `&${field}=a%00b` },
        { name: `${field} not UTF-8`, expect: ['M_INVALID_PARAM'], query: spoilt(undefined) + `&${field}=%C3` },
      );
    }
  }
  return out;
}

function json(body: Record<string, unknown> | undefined): string | undefined {
  return body === undefined ? undefined : JSON.stringify(body);
}

async function send(route: Route, variant: Variant): Promise<Reply> {
  const internal = route.path.startsWith('internal:');
  const path = internal ? route.path.slice('internal:'.length) : route.path;
  const url = (internal ? t.internalUrl(path) : t.url(path)) + (variant.query ? `?${variant.query}` : '');
  const headers: Record<string, string> = {};
  if (route.auth) headers['authorization'] = `Bearer ${token}`;
  if (variant.body !== undefined) headers['content-type'] = 'application/json';
  const body =
    typeof variant.body === 'string' || variant.body === undefined ? variant.body : new Uint8Array(variant.body);
  const res = await fetch(url, { method: route.method, headers, body, redirect: 'manual' });
  const text = await res.text();
  let parsed: Record<string, unknown> = {};
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // judged below: the body must be JSON
  }
  return { status: res.status, headers: res.headers, json: parsed, text };
}

/** What the world saw: rows, mails, SMS, homeserver requests. */
function worldState() {
  return {
    db: databaseSnapshot(t),
    mails: smtp.messages.length,
    sms: om.messages.length,
    homeserver: env.hs.requests.length,
  };
}

describe('every route refuses bad input with a Matrix error and changes nothing', () => {
  for (const route of ROUTES) {
    it(`${route.method} ${route.path}`, async () => {
      const before = worldState();
      const problems: string[] = [];
      for (const variant of variants(route)) {
        const res = await send(route, variant);
        const what = `${variant.name}: ${res.status} ${res.text.slice(0, 160)}`;
        const accepted = route.accepts?.[variant.name];
        if (accepted !== undefined) {
          if (res.status !== 200 || JSON.stringify(res.json) !== JSON.stringify(accepted)) problems.push(what);
        } else if (
          res.status < 400 ||
          res.status >= 500 ||
          !(res.headers.get('content-type') ?? '').startsWith('application/json') ||
          // CORS on the client listener; the internal one sends none
          res.headers.get('access-control-allow-origin') !== (route.path.startsWith('internal:') ? null : '*') ||
          typeof res.json['error'] !== 'string' ||
          !variant.expect.includes(res.json['errcode'] as string)
        ) {
          problems.push(`${what} (expected ${variant.expect.join(' or ')})`);
        }
        const after = worldState();
        if (JSON.stringify(after) !== JSON.stringify(before)) {
          const tables = Object.keys(after.db).filter((k) => after.db[k] !== before.db[k]);
          problems.push(
            `${variant.name}: changed ${JSON.stringify({ ...after, db: tables })} (was ${JSON.stringify({ ...before, db: undefined })})`,
          );
          Object.assign(before, after);
        }
      }
      expect(problems).toEqual([]);
    });
  }
});
