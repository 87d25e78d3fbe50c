/**
 * The inbound push endpoint against pushes made by hand, as a Sydent peer sends them (sydent-behaviour §4.2,
 * §4.3): accepted when shaped and signed right; refused whole, with nothing stored, for a bad signature, an
 * unknown peer, a certificate whose common name is not the signer, or a malformed batch.
 */
import path from 'node:path';
import tls from 'node:tls';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeBase64, generateSeed, lookupHash, publicKeyFromSeed, signJson } from '../src/crypto/index.js';
import { BODY_LIMIT } from '../src/http/app.js';
import { PUSH_BODY_LIMIT } from '../src/http/routes/replicate.js';
import { makeCa, makeCert, type Pem } from './helpers/certs.js';
import {
  addPeer,
  bind,
  lookup,
  makePeerCert,
  runPeers,
  startMesh,
  type Mesh,
  type Replica,
} from './helpers/replication.js';
import { expectAssociationFields } from './helpers/bindings.js';
import { write } from './helpers/flows.js';
import { row, rows } from './helpers/rows.js';

const PUSH = '/_matrix/identity/replicate/v1/push';
const DAY = 24 * 3600_000;

interface TestPeer {
  name: string;
  seed: Uint8Array;
  pubkey: string;
  agent: Agent;
}

let ca: Pem;
let mesh: Mesh;
let b: Replica;
let peerA: TestPeer;
let peerC: TestPeer;
const agents: Agent[] = [];

function agentFor(cert: Pem | null, trust: Pem = ca): Agent {
  const agent = new Agent({ connect: { ...(cert ? { key: cert.key, cert: cert.cert } : {}), ca: trust.cert } });
  agents.push(agent);
  return agent;
}

async function makePeer(name: string): Promise<TestPeer> {
  const seed = generateSeed();
  return { name, seed, pubkey: encodeBase64(publicKeyFromSeed(seed)), agent: agentFor(await makePeerCert(ca, name)) };
}

/** A binding as Sydent's Signer.signedThreePidAssociation makes it, signed as `signer`. */
function sgAssoc(
  signer: TestPeer,
  fields: { address: string; mxid: string | null; ts: number; medium?: string },
  signAs = signer.name,
) {
  const tombstone = fields.mxid === null;
  return signJson(
    {
      medium: fields.medium ?? 'email',
      address: fields.address,
      mxid: fields.mxid,
      ts: fields.ts,
      not_before: tombstone ? null : fields.ts,
      not_after: tombstone ? null : fields.ts + 100 * 365 * DAY,
    },
    signAs,
    { version: '0', seed: signer.seed },
  );
}

async function push(
  agent: Agent,
  body: unknown,
  headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'Sydent' },
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await request(`https://127.0.0.1:${b.port}${PUSH}`, {
    method: 'POST',
    dispatcher: agent,
    headers,
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const json = (await res.body.json()) as Record<string, unknown>;
  return { status: res.statusCode, json };
}

function globalRows(origin?: string): Array<Record<string, unknown>> {
  const sql = 'SELECT * FROM global_threepid_associations' + (origin ? ' WHERE originServer = ?' : '') + ' ORDER BY id';
  return origin ? rows(path.join(b.dir, 'sydent.db'), sql, origin) : rows(path.join(b.dir, 'sydent.db'), sql);
}

function pepper(): string {
  return row<{ lookup_pepper: string }>(path.join(b.dir, 'sydent.db'), 'SELECT lookup_pepper FROM hashing_metadata')!
    .lookup_pepper;
}

beforeAll(async () => {
  ca = await makeCa();
  mesh = await startMesh(ca, ['b.test'], { connect: false });
  b = mesh.replicas[0]!;
  peerA = await makePeer('a.test');
  peerC = await makePeer('c.test');
  await addPeer(b, 'a.test', peerA.pubkey);
  await addPeer(b, 'c.test', peerC.pubkey);
}, 30_000);

afterAll(async () => {
  await Promise.allSettled(agents.map((a) => a.close()));
  await mesh?.close();
});

describe('a push shaped exactly as Sydent sends it', () => {
  const t0 = Date.now() - 60_000;

  it('is accepted and stored as received, with our pepper and the email casefolded', async () => {
    const assoc = sgAssoc(peerA, { address: 'Dave@Example.ORG', mxid: '@dave:hs.test', ts: t0 });
    const res = await push(peerA.agent, { sgAssocs: { '1': assoc } });
    expect(res).toEqual({ status: 200, json: { success: true } });
    expect(await lookup(b.server, 'dave@example.org')).toBe('@dave:hs.test');
    const [row] = globalRows('a.test');
    expect(row).toMatchObject({
      medium: 'email',
      address: 'dave@example.org',
      mxid: '@dave:hs.test',
      ts: t0,
      notBefore: t0,
      notAfter: assoc.not_after,
      originServer: 'a.test',
      originId: 1,
      lookup_hash: lookupHash('dave@example.org', 'email', pepper()),
    });
    expect(JSON.parse(row!['sgAssoc'] as string)).toEqual(assoc);
  });

  it('is idempotent: the same push again stores nothing twice', async () => {
    const assoc = sgAssoc(peerA, { address: 'Dave@Example.ORG', mxid: '@dave:hs.test', ts: t0 });
    expect((await push(peerA.agent, { sgAssocs: { '1': assoc } })).status).toBe(200);
    expect(globalRows('a.test')).toHaveLength(1);
  });

  it('accepts a charset in the content type', async () => {
    const assoc = sgAssoc(peerA, { address: 'erin@example.org', mxid: '@erin:hs.test', ts: t0 });
    const res = await push(
      peerA.agent,
      { sgAssocs: { '2': assoc } },
      { 'content-type': 'application/json; charset=utf-8' },
    );
    expect(res.status).toBe(200);
    expect(await lookup(b.server, 'erin@example.org')).toBe('@erin:hs.test');
  });

  it('applies a tombstone (mxid null, null times) shaped as Sydent sends it', async () => {
    const tomb = sgAssoc(peerA, { address: 'dave@example.org', mxid: null, ts: t0 + 1000 });
    expectAssociationFields(tomb);
    const res = await push(peerA.agent, { sgAssocs: { '3': tomb } });
    expect(res.status).toBe(200);
    expect(await lookup(b.server, 'dave@example.org')).toBeNull();
    expect(globalRows('a.test').map((r) => r['address'])).toEqual(['erin@example.org']);
  });

  it('applies a batch in id order: bind, unbind, bind again leaves the last', async () => {
    const sgAssocs = {
      '12': sgAssoc(peerA, { address: 'frank@example.org', mxid: '@frank2:hs.test', ts: t0 + 3000 }),
      '10': sgAssoc(peerA, { address: 'frank@example.org', mxid: '@frank:hs.test', ts: t0 + 1000 }),
      '11': sgAssoc(peerA, { address: 'frank@example.org', mxid: null, ts: t0 + 2000 }),
    };
    expect((await push(peerA.agent, { sgAssocs })).status).toBe(200);
    expect(await lookup(b.server, 'frank@example.org')).toBe('@frank2:hs.test');
    expect(
      globalRows('a.test')
        .filter((r) => r['address'] === 'frank@example.org')
        .map((r) => r['originId']),
    ).toEqual([12]);
  });

  it('an old tombstone does not remove a newer binding (ours or another peer’s)', async () => {
    await bind(b.server, 'grace@example.org', '@grace:hs.test');
    const old = sgAssoc(peerA, { address: 'grace@example.org', mxid: null, ts: t0 });
    expect((await push(peerA.agent, { sgAssocs: { '20': old } })).status).toBe(200);
    expect(await lookup(b.server, 'grace@example.org')).toBe('@grace:hs.test');

    const fromC = sgAssoc(peerC, { address: 'heidi@example.org', mxid: '@heidi:hs.test', ts: t0 + 5000 });
    expect((await push(peerC.agent, { sgAssocs: { '1': fromC } })).status).toBe(200);
    const olderTomb = sgAssoc(peerA, { address: 'heidi@example.org', mxid: null, ts: t0 + 4000 });
    expect((await push(peerA.agent, { sgAssocs: { '21': olderTomb } })).status).toBe(200);
    expect(await lookup(b.server, 'heidi@example.org')).toBe('@heidi:hs.test');
    // a newer one does, whatever the origin (as Sydent)
    const newerTomb = sgAssoc(peerA, { address: 'heidi@example.org', mxid: null, ts: t0 + 6000 });
    expect((await push(peerA.agent, { sgAssocs: { '22': newerTomb } })).status).toBe(200);
    expect(await lookup(b.server, 'heidi@example.org')).toBeNull();
  });

  it('accepts a peer key stored in legacy hex', async () => {
    const seed = generateSeed();
    const hexPeer: TestPeer = {
      name: 'hex.test',
      seed,
      pubkey: Buffer.from(publicKeyFromSeed(seed)).toString('hex'),
      agent: agentFor(await makePeerCert(ca, 'hex.test')),
    };
    // the command stores base64; an old Sydent database may hold hex, as written by hand
    await addPeer(b, 'hex.test', hexPeer.pubkey);
    await write(b.server, "UPDATE peer_pubkeys SET key = ? WHERE peername = 'hex.test'", hexPeer.pubkey);
    const assoc = sgAssoc(hexPeer, { address: 'ivan@example.org', mxid: '@ivan:hs.test', ts: t0 });
    expect((await push(hexPeer.agent, { sgAssocs: { '1': assoc } })).status).toBe(200);
    expect(await lookup(b.server, 'ivan@example.org')).toBe('@ivan:hs.test');
  });
});

describe('a push much larger than Sydent’s batches of 100', () => {
  const t0 = Date.now() - 20_000;
  const N = 3000;
  const batch = (first: number, tag: string) =>
    Object.fromEntries(
      Array.from({ length: N }, (_, i) => [
        String(first + i),
        sgAssoc(peerC, { address: `${tag}${i}@large.example.org`, mxid: `@${tag}${i}:hs.test`, ts: t0 + i }),
      ]),
    );

  it('is stored whole, in one piece, when every signature verifies', async () => {
    const body = { sgAssocs: batch(1, 'big') };
    // Larger than the other listeners' bodies may be (512 KiB).
    expect(JSON.stringify(body).length).toBeGreaterThan(BODY_LIMIT);
    const res = await push(peerC.agent, body);
    expect(res).toEqual({ status: 200, json: { success: true } });
    const rows = globalRows('c.test').filter((r) => String(r['address']).endsWith('@large.example.org'));
    expect(rows).toHaveLength(N);
    expect(rows.map((r) => r['originId'])).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    expect(await lookup(b.server, `big${N - 1}@large.example.org`)).toBe(`@big${N - 1}:hs.test`);
  });

  it('is refused whole, with the failing id and nothing of it stored, for one bad signature in it', async () => {
    const before = globalRows().length;
    const sgAssocs = batch(10_001, 'bad');
    const forged = sgAssocs['12000'] as { signatures: Record<string, Record<string, string>> };
    forged.signatures['c.test']!['ed25519:0'] = (sgAssocs['10001'] as typeof forged).signatures['c.test']![
      'ed25519:0'
    ]!;
    const res = await push(peerC.agent, { sgAssocs });
    expect(res).toEqual({
      status: 400,
      json: {
        errcode: 'M_VERIFICATION_FAILED',
        error: 'Verification failed for one or more associations',
        failed_ids: ['12000'],
      },
    });
    expect(globalRows()).toHaveLength(before);
    expect(await lookup(b.server, 'bad0@large.example.org')).toBeNull();
  });

  it('past the size limit: 413 M_TOO_LARGE, nothing stored', async () => {
    const before = globalRows().length;
    const res = await push(
      peerC.agent,
      JSON.stringify({
        sgAssocs: { '1': sgAssoc(peerC, { address: 'huge@large.example.org', mxid: '@h:hs.test', ts: t0 }) },
        pad: 'x'.repeat(PUSH_BODY_LIMIT),
      }),
    );
    expect(res.status).toBe(413);
    expect(res.json['errcode']).toBe('M_TOO_LARGE');
    expect(globalRows()).toHaveLength(before);
  });
});

describe('refused pushes store nothing', () => {
  const t0 = Date.now() - 30_000;
  let before: number;
  const good = (address: string) => sgAssoc(peerA, { address, mxid: '@ok:hs.test', ts: t0 });

  async function expectRefused(
    res: { status: number; json: Record<string, unknown> },
    status: number,
    errcode: string,
  ) {
    expect(res.status).toBe(status);
    expect(res.json['errcode']).toBe(errcode);
    expect(globalRows()).toHaveLength(before);
    expect(await lookup(b.server, 'refused@example.org')).toBeNull();
  }

  it('a bad signature: the whole batch, with the failing ids', async () => {
    before = globalRows().length;
    const forged = good('forged@example.org');
    forged.signatures['a.test']!['ed25519:0'] = good('other@example.org').signatures['a.test']!['ed25519:0']!;
    const wrongKey = sgAssoc(peerC, { address: 'wrongkey@example.org', mxid: '@x:hs.test', ts: t0 }, 'a.test');
    const res = await push(peerA.agent, {
      sgAssocs: { '100': good('refused@example.org'), '101': forged, '102': wrongKey },
    });
    await expectRefused(res, 400, 'M_VERIFICATION_FAILED');
    expect(res.json).toEqual({
      errcode: 'M_VERIFICATION_FAILED',
      error: 'Verification failed for one or more associations',
      failed_ids: ['101', '102'],
    });
  });

  it('an association tampered with after signing', async () => {
    const assoc = { ...good('refused@example.org'), mxid: '@mallory:hs.test' };
    await expectRefused(await push(peerA.agent, { sgAssocs: { '103': assoc } }), 400, 'M_VERIFICATION_FAILED');
  });

  it('an unsigned association, or one signed under another key id', async () => {
    const { signatures: _s, ...unsigned } = good('refused@example.org');
    const otherKeyId = signJson({ ...unsigned }, 'a.test', { version: '1', seed: peerA.seed });
    const res = await push(peerA.agent, { sgAssocs: { '104': unsigned, '105': otherKeyId } });
    await expectRefused(res, 400, 'M_VERIFICATION_FAILED');
    expect(res.json['failed_ids']).toEqual(['104', '105']);
  });

  it('from an unknown peer (its certificate is good, its name is not in peers)', async () => {
    const stranger = await makePeer('stranger.test');
    const assoc = sgAssoc(stranger, { address: 'refused@example.org', mxid: '@x:hs.test', ts: t0 });
    const res = await push(stranger.agent, { sgAssocs: { '1': assoc } });
    await expectRefused(res, 403, 'M_UNKNOWN_PEER');
    expect(res.json['error']).toBe('This peer is not known to this server');
  });

  it('from a peer that is not active', async () => {
    const sleeper = await makePeer('inactive.test');
    await addPeer(b, 'inactive.test', sleeper.pubkey);
    await write(b.server, "UPDATE peers SET active = 0 WHERE name = 'inactive.test'");
    const assoc = sgAssoc(sleeper, { address: 'refused@example.org', mxid: '@x:hs.test', ts: t0 });
    await expectRefused(await push(sleeper.agent, { sgAssocs: { '1': assoc } }), 403, 'M_UNKNOWN_PEER');
  });

  it('with a certificate whose common name does not match the signer', async () => {
    // C's certificate, A's signatures (and A's key): C is known, but nothing is signed by C
    const signedByA = good('refused@example.org');
    const res = await push(peerC.agent, { sgAssocs: { '106': signedByA } });
    await expectRefused(res, 400, 'M_VERIFICATION_FAILED');
    // A's certificate, associations signed by C under C's name
    const signedByC = sgAssoc(peerC, { address: 'refused@example.org', mxid: '@x:hs.test', ts: t0 });
    await expectRefused(await push(peerA.agent, { sgAssocs: { '107': signedByC } }), 400, 'M_VERIFICATION_FAILED');
  });

  it('a malformed batch: not JSON, no sgAssocs, not an object, wrong content type', async () => {
    await expectRefused(await push(peerA.agent, '{"sgAssocs": {'), 400, 'M_BAD_JSON');
    const noKey = await push(peerA.agent, { assocs: {} });
    await expectRefused(noKey, 400, 'M_BAD_JSON');
    expect(noKey.json['error']).toBe('No "sgAssocs" key in JSON');
    await expectRefused(await push(peerA.agent, { sgAssocs: [good('refused@example.org')] }), 400, 'M_BAD_JSON');
    await expectRefused(await push(peerA.agent, [1, 2]), 400, 'M_BAD_JSON');
    const notJson = await push(
      peerA.agent,
      { sgAssocs: { '108': good('refused@example.org') } },
      { 'content-type': 'text/plain' },
    );
    await expectRefused(notJson, 400, 'M_NOT_JSON');
    expect(notJson.json['error']).toBe('This endpoint expects JSON');
  });

  it('a malformed association: missing fields, wrong types, a non-numeric id', async () => {
    const { ts: _ts, ...noTs } = good('refused@example.org');
    const noTsSigned = signJson({ ...noTs, signatures: undefined } as never, 'a.test', {
      version: '0',
      seed: peerA.seed,
    });
    const stringTs = sgAssoc(peerA, { address: 'refused@example.org', mxid: '@x:hs.test', ts: t0 });
    const badTs = signJson({ ...stringTs, signatures: undefined, ts: String(t0) } as never, 'a.test', {
      version: '0',
      seed: peerA.seed,
    });
    const res = await push(peerA.agent, {
      sgAssocs: {
        '109': noTsSigned,
        '110': badTs,
        abc: good('refused@example.org'),
        '111': 'nope',
        '112': good('refused@example.org'),
      },
    });
    await expectRefused(res, 400, 'M_VERIFICATION_FAILED');
    expect(res.json['failed_ids']).toEqual(['abc', '109', '110', '111']);
  });

  it('hostile bytes from a known peer: 4xx Matrix errors with CORS, nothing stored', async () => {
    before = globalRows().length;
    const signed = JSON.stringify({ sgAssocs: { '113': good('refused@example.org') } });
    const open = signed.slice(0, -1);
    const cases: Array<[what: string, query: string, body: string | Buffer, status: number, errcode: string]> = [
      [
        'a body that is not UTF-8',
        '',
        Buffer.concat([Buffer.from(open), Buffer.from(',"x":"\xff"}', 'latin1')]),
        400,
        'M_BAD_JSON',
      ],
      ['a NUL in a key', '', `${open},"a\\u0000":1}`, 400, 'M_BAD_JSON'],
      ['a lone surrogate', '', `${open},"x":"\\udc00"}`, 400, 'M_BAD_JSON'],
      ['nested 100,000 deep', '', `${open},"x":${'['.repeat(100_000)}${']'.repeat(100_000)}}`, 400, 'M_BAD_JSON'],
      ['a parameter given twice', 'x=1&x=2', signed, 400, 'M_INVALID_PARAM'],
      ['invalid percent-encoding', 'x=%ZZ', signed, 400, 'M_INVALID_PARAM'],
      ['a body over the limit', '', `${open},"x":"${'x'.repeat(PUSH_BODY_LIMIT + 1000)}"}`, 413, 'M_TOO_LARGE'],
    ];
    for (const [what, query, body, status, errcode] of cases) {
      const res = await request(`https://127.0.0.1:${b.port}${PUSH}${query ? `?${query}` : ''}`, {
        method: 'POST',
        dispatcher: peerA.agent,
        headers: { 'content-type': 'application/json' },
        body,
      });
      expect(res.headers['content-type'], what).toMatch(/^application\/json/);
      expect(res.headers['access-control-allow-origin'], what).toBe('*');
      expect([res.statusCode, await res.body.json()], what).toEqual([status, { errcode, error: expect.any(String) }]);
    }
    expect(globalRows()).toHaveLength(before);
    expect(await lookup(b.server, 'refused@example.org')).toBeNull();
  });

  it("a request Node cannot parse as HTTP, over the peer's TLS: a JSON 400 with CORS, then the connection closes", async () => {
    const cert = await makePeerCert(ca, 'a.test');
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = tls.connect(
        { host: '127.0.0.1', port: b.port, key: cert.key, cert: cert.cert, ca: ca.cert, servername: 'b.test' },
        () => socket.write('NOT HTTP AT ALL\r\n\r\n'),
      );
      let text = '';
      socket.setEncoding('utf8');
      socket.on('data', (chunk: string) => (text += chunk));
      socket.on('end', () => resolve(text));
      socket.on('error', reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400 /);
    expect(answer.toLowerCase()).toContain('\r\naccess-control-allow-origin: *\r\n');
    expect(JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4))).toEqual({
      errcode: 'M_UNRECOGNIZED',
      error: expect.any(String),
    });
  });

  it('without a client certificate, or with one from another CA: no TLS session at all', async () => {
    await expect(push(agentFor(null), { sgAssocs: {} })).rejects.toThrow();
    const otherCa = await makeCa('another CA');
    const foreign = await makeCert(otherCa, { hostnames: ['a.test'] });
    const agent = new Agent({ connect: { key: foreign.key, cert: foreign.cert, ca: ca.cert } });
    agents.push(agent);
    await expect(push(agent, { sgAssocs: {} })).rejects.toThrow();
  });

  it('other paths and methods on the replication listener are JSON errors', async () => {
    const res = await request(`https://127.0.0.1:${b.port}${PUSH}`, { method: 'GET', dispatcher: peerA.agent });
    expect(res.statusCode).toBe(405);
    expect(((await res.body.json()) as { errcode: string }).errcode).toBe('M_UNRECOGNIZED');
    const other = await request(`https://127.0.0.1:${b.port}/_matrix/identity/v2/lookup`, {
      method: 'GET',
      dispatcher: peerA.agent,
    });
    expect(other.statusCode).toBe(404);
    await other.body.dump();
  });

  it('the peers command: list shows the peers B knows', async () => {
    const out = await runPeers(b.dir, ['list', '--json']);
    expect(out.code).toBe(0);
    const peers = JSON.parse(out.stdout) as Array<{ name: string; active: boolean }>;
    expect(peers.map((p) => p.name)).toEqual(['a.test', 'c.test', 'hex.test', 'inactive.test']);
    expect(peers.find((p) => p.name === 'inactive.test')!.active).toBe(false);
  });
});
