/**
 * v2 lookups of 1, 1,000 and 10,000 addresses (the default `address_lookup_limit`) against 500 bindings made
 * through the internal API, with hits and misses mixed: the mappings hold exactly the hits, for `sha256` and
 * `none`; 10,001 addresses are refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFederationEnv, type FederationEnv } from './helpers/federation-env.js';
import { internal, lookupPepper, lookupV2, registerAccount, sha256Of } from './helpers/flows.js';
import { rows } from './helpers/rows.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const BOUND = 500;
const address = (i: number) => `hit${i}@scale.example`;
const mxidOf = (i: number) => `@hit${i}:hs.example`;
const missAddress = (i: number) => `miss${i}@scale.example`;

let env: FederationEnv;
let t: TestServer;
let token: string;
let pepper: string;

beforeAll(async () => {
  env = await startFederationEnv({});
  t = await startTestServer({ conf: env.conf });
  token = await registerAccount(t, env, 'scaler');
  pepper = await lookupPepper(t, token);
  // 500 bindings, 50 requests at a time
  for (let start = 0; start < BOUND; start += 50) {
    const replies = await Promise.all(
      Array.from({ length: 50 }, (_, k) =>
        internal(t, 'bind', { medium: 'email', address: address(start + k), mxid: mxidOf(start + k) }),
      ),
    );
    for (const r of replies) expect(r.status, r.text).toBe(200);
  }
  expect(rows<{ n: number }>(t, 'SELECT count(*) AS n FROM global_threepid_associations')[0]!.n).toBe(BOUND);
});
afterAll(async () => {
  await t?.close();
  await env?.close();
});

/** A deterministic shuffle (so a failure reproduces). */
function shuffle<T>(items: T[], seed = 7): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

interface Case {
  /** the strings sent */
  addresses: string[];
  /** what the mappings must be */
  expected: Record<string, string>;
}

/** `hits` bound indexes and `misses` unbound addresses, shuffled together, as sha256 and as none requests. */
function cases(hits: number[], misses: number, missOffset = 0): { sha256: Case; none: Case } {
  const sha256: Case = { addresses: [], expected: {} };
  const none: Case = { addresses: [], expected: {} };
  for (const i of hits) {
    const hash = sha256Of(address(i), 'email', pepper);
    sha256.addresses.push(hash);
    sha256.expected[hash] = mxidOf(i);
    // every third hit in upper case: matched, and keyed as sent
    const sent = `${i % 3 === 0 ? address(i).toUpperCase() : address(i)} email`;
    none.addresses.push(sent);
    none.expected[sent] = mxidOf(i);
  }
  for (let k = 0; k < misses; k++) {
    sha256.addresses.push(sha256Of(missAddress(missOffset + k), 'email', pepper));
    none.addresses.push(`${missAddress(missOffset + k)} email`);
  }
  sha256.addresses = shuffle(sha256.addresses);
  none.addresses = shuffle(none.addresses);
  return { sha256, none };
}

async function expectMappings(algorithm: 'sha256' | 'none', c: Case): Promise<void> {
  const res = await lookupV2(t, token, { addresses: c.addresses, algorithm, pepper });
  expect(res.status, res.text.slice(0, 300)).toBe(200);
  const mappings = res.json['mappings'] as Record<string, string>;
  expect(Object.keys(mappings).length).toBe(Object.keys(c.expected).length);
  expect(mappings).toEqual(c.expected);
}

const range = (n: number, from = 0) => Array.from({ length: n }, (_, k) => from + k);

describe.each(['sha256', 'none'] as const)('%s', (algorithm) => {
  it('1 address: a hit, then a miss', async () => {
    await expectMappings(algorithm, cases([321], 0)[algorithm]);
    await expectMappings(algorithm, cases([], 1)[algorithm]);
  });

  it('1,000 addresses: 250 hits among 750 misses', async () => {
    const hits = range(250).map((k) => k * 2); // every other bound address
    await expectMappings(algorithm, cases(hits, 750)[algorithm]);
  });

  it('10,000 addresses (the default limit): all 500 hits among 9,500 misses', async () => {
    const c = cases(range(BOUND), 9_500, 1_000)[algorithm];
    expect(c.addresses).toHaveLength(10_000);
    await expectMappings(algorithm, c);
  });

  it('10,001 addresses: 400 M_TOO_LARGE', async () => {
    const c = cases(range(BOUND), 9_501)[algorithm];
    const res = await lookupV2(t, token, { addresses: c.addresses, algorithm, pepper });
    expect(res.status).toBe(400);
    expect(res.json['errcode']).toBe('M_TOO_LARGE');
  });
});
