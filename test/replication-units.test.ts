import { describe, expect, it } from 'vitest';
import {
  CanonicalJsonError,
  canonicalJson,
  canonicalJsonBytes,
  decodeBase64,
  encodeBase64,
  encodeBase64Url,
  generateSeed,
  publicKeyFromSeed,
  signJson,
  verifyKeyObject,
  verifySignedJson,
} from '../src/crypto/index.js';
import { isOwnSignature } from '../src/crypto/own-signature.js';
import { decodePeerKey, PeerKeyError } from '../src/replication/keys.js';
import {
  buildBatch,
  canonicalWire,
  mayOverlap,
  SIGN_SLICE,
  type OutboundBatch,
  type PushBody,
} from '../src/replication/outbound.js';
import { pushUrl } from '../src/replication/peer-config.js';
import { checkPush } from '../src/replication/receive.js';
import type { LocalAssociationRow } from '../src/store/peers.js';
import { commonNameOf, splitPem } from '../src/replication/tls.js';
import { makeCa } from './helpers/certs.js';
import { makePeerCert } from './helpers/replication.js';

const key = { version: '0', seed: generateSeed() };
const pub = verifyKeyObject(publicKeyFromSeed(key.seed));

/** The associations of a batch's JSON text, as a peer parses them. */
const sgAssocsOf = (batch: OutboundBatch) => (JSON.parse(batch.body) as PushBody).sgAssocs;

describe('checkPush: the signature rules (Sydent verifySignedAssociation)', () => {
  const assoc = { medium: 'email', address: 'a@x.test', mxid: '@a:hs.test', ts: 1, not_before: 1, not_after: 2 };
  const reasonOf = async (value: unknown, name = 'a.test') => {
    const checked = await checkPush({ '1': value }, name, pub);
    return checked.ok ? null : checked.reasons['1'];
  };

  it('accepts a signature under the peer name and ed25519:0, whatever else is signed or unsigned', async () => {
    const signed = signJson(signJson(assoc, 'other.test', { version: '0', seed: generateSeed() }), 'a.test', key);
    expect(await reasonOf(signed)).toBeNull();
    expect(await reasonOf({ ...signed, unsigned: { x: 1 } })).toBeNull();
  });

  it('refuses tampering, another signer, another key id, bad base64 and no signatures', async () => {
    const signed = signJson(assoc, 'a.test', key);
    expect(await reasonOf({ ...signed, ts: 2 })).toMatch(/does not verify/);
    expect(await reasonOf(signed, 'b.test')).toMatch(/no signature from b.test/);
    expect(await reasonOf(signJson(assoc, 'a.test', { version: '1', seed: key.seed }))).toMatch(
      /no signature with key ed25519:0/,
    );
    expect(await reasonOf({ ...signed, signatures: { 'a.test': { 'ed25519:0': 'not base64!' } } })).toMatch(/base64/);
    expect(await reasonOf(assoc)).toMatch(/no signature/);
  });
});

describe('the outbound batch', () => {
  it('keys rows by their log id and signs each one', async () => {
    const batch = await buildBatch(
      [
        { id: 7, medium: 'email', address: 'a@x.test', mxid: '@a:x.test', ts: 5, notBefore: 5, notAfter: 9 },
        { id: 9, medium: 'email', address: 'b@x.test', mxid: null, ts: 6, notBefore: null, notAfter: null },
      ],
      'a.test',
      key,
    );
    expect(batch.lastId).toBe(9);
    expect(batch.count).toBe(2);
    expect(Object.keys(sgAssocsOf(batch))).toEqual(['7', '9']);
    expect(sgAssocsOf(batch)['9']).toEqual(
      signJson(
        { medium: 'email', address: 'b@x.test', mxid: null, ts: 6, not_before: null, not_after: null },
        'a.test',
        key,
      ),
    );
  });

  it('signs a batch of several slices whole, while the event loop goes on between them', async () => {
    const count = SIGN_SLICE * 2 + 1;
    const rows = Array.from({ length: count }, (_, i) => ({
      id: i + 1,
      medium: 'email',
      address: `u${i + 1}@x.test`,
      mxid: `@u${i + 1}:x.test`,
      ts: 5,
      notBefore: 5,
      notAfter: 9,
    }));
    let turns = 0;
    const ticking = setInterval(() => turns++, 0);
    const batch = await buildBatch(rows, 'a.test', key).finally(() => clearInterval(ticking));
    expect(batch.count).toBe(count);
    expect(batch.lastId).toBe(count);
    expect(Object.keys(sgAssocsOf(batch))).toEqual(rows.map((r) => String(r.id)));
    for (const id of ['1', String(SIGN_SLICE + 1), String(count)]) {
      expect(() =>
        verifySignedJson(sgAssocsOf(batch)[id]!, 'a.test', 'ed25519:0', publicKeyFromSeed(key.seed)),
      ).not.toThrow();
    }
    expect(turns).toBeGreaterThan(0);
  });

  it('writes each association exactly as canonical JSON does, whatever its columns hold', () => {
    const strings = [
      'a@x.test',
      'quote" back\\ slash',
      'ctl \u0000\u001f\n\t\u007f',
      'sep \u2028\u2029',
      'astral 😀 𝄞',
      'lone \ud800 \udfff',
      'é 中文',
      '',
    ];
    const numbers = [0, 1, -1, 1_700_000_000_000, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, null];
    /** canonicalJson of the wire form as buildBatch signed it before writing it out, or the error's message */
    const expected = (r: LocalAssociationRow) => {
      const tombstone = r.mxid === null;
      const wire = {
        medium: r.medium,
        address: r.address,
        mxid: r.mxid,
        ts: r.ts,
        not_before: tombstone ? null : r.notBefore,
        not_after: tombstone ? null : r.notAfter,
      };
      try {
        return canonicalJson(wire);
      } catch (e) {
        return (e as Error).message;
      }
    };
    const written = (r: LocalAssociationRow) => {
      try {
        return canonicalWire(r);
      } catch (e) {
        expect(e).toBeInstanceOf(CanonicalJsonError);
        return (e as Error).message;
      }
    };
    let compared = 0;
    for (const address of strings)
      for (const mxid of [...strings, null])
        for (const n of numbers) {
          const r = { id: 1, medium: 'email', address, mxid, ts: n, notBefore: n, notAfter: numbers[compared % 7]! };
          expect(written(r)).toBe(expected(r));
          compared++;
        }
    // numbers canonical JSON refuses, and columns of other types than the schema's (SQLite keeps what it is given)
    const odd: LocalAssociationRow[] = [
      ...[1.5, 2 ** 53, NaN, Infinity].map((n) => ({
        id: 1,
        medium: 'email',
        address: 'a',
        mxid: 'm',
        ts: n,
        notBefore: 1,
        notAfter: 2,
      })),
      { id: 1, medium: 'email', address: 'a', mxid: 'm', ts: 1, notBefore: 1.5, notAfter: 2 },
      { id: 1, medium: 'email', address: 'a', mxid: null, ts: 1, notBefore: 1.5, notAfter: 2 ** 60 },
      {
        id: 1,
        medium: 'msisdn',
        address: 447700900000 as unknown as string,
        mxid: 'm',
        ts: 1,
        notBefore: 1,
        notAfter: 2,
      },
      { id: 1, medium: 'email', address: 'a', mxid: 12 as unknown as string, ts: 1, notBefore: 1, notAfter: 2 },
      { id: 1, medium: 'email', address: 'a', mxid: 'm', ts: '5' as unknown as number, notBefore: 1, notAfter: 2 },
    ];
    for (const r of odd) expect(written(r)).toBe(expected(r));
    expect(written(odd[0]!)).toMatch(/not an integer/);
    expect(compared).toBe(strings.length * (strings.length + 1) * numbers.length);
  });

  it('is JSON text a peer parses back into the signed associations', async () => {
    const rows = [
      { id: 3, medium: 'email', address: 'q"\\😀\u2028@x.test', mxid: '@q:x.test', ts: 5, notBefore: 5, notAfter: 9 },
      { id: 4, medium: 'msisdn', address: '447700900000', mxid: null, ts: 6, notBefore: null, notAfter: null },
    ];
    const batch = await buildBatch(rows, 'odd "name"', key);
    const sent = sgAssocsOf(batch);
    expect(Object.keys(sent)).toEqual(['3', '4']);
    expect(sent['3']).toEqual(
      signJson(
        { medium: 'email', address: rows[0]!.address, mxid: '@q:x.test', ts: 5, not_before: 5, not_after: 9 },
        'odd "name"',
        key,
      ),
    );
    expect(sent['4']).toEqual(
      signJson(
        { medium: 'msisdn', address: '447700900000', mxid: null, ts: 6, not_before: null, not_after: null },
        'odd "name"',
        key,
      ),
    );
  });
});

describe('checkPush', () => {
  const k = pub;
  it('casefolds email addresses, keeps msisdns, sorts by id, and keeps the JSON as received', async () => {
    const email = signJson(
      { medium: 'email', address: 'Straße@X.test', mxid: '@a:x', ts: 3, not_before: 3, not_after: 4 },
      'a.test',
      key,
    );
    const phone = signJson(
      { medium: 'msisdn', address: '447700900000', mxid: '@b:x', ts: 2, not_before: 2, not_after: 4 },
      'a.test',
      key,
    );
    const checked = await checkPush({ '10': email, '2': phone }, 'a.test', k);
    expect(checked.ok).toBe(true);
    if (!checked.ok) return;
    expect(checked.associations.map((a) => [a.originId, a.address])).toEqual([
      [2, '447700900000'],
      [10, 'strasse@x.test'],
    ]);
    expect(JSON.parse(checked.associations[1]!.sgAssoc)).toEqual(email);
  });
});

describe('peer keys', () => {
  const bytes = publicKeyFromSeed(generateSeed());
  it('reads standard and URL-safe base64, and legacy hex', () => {
    expect(decodePeerKey(encodeBase64(bytes))).toEqual({ bytes, legacyHex: false });
    expect(decodePeerKey(encodeBase64Url(bytes)).bytes).toEqual(bytes);
    expect(decodePeerKey(`${Buffer.from(bytes).toString('base64')}`).bytes).toEqual(bytes); // padded
    expect(decodePeerKey(Buffer.from(bytes).toString('hex').toUpperCase())).toEqual({ bytes, legacyHex: true });
  });
  it('refuses anything else', () => {
    for (const bad of ['', 'abc', encodeBase64(bytes.slice(0, 31)), 'not a key!']) {
      expect(() => decodePeerKey(bad), bad).toThrow(PeerKeyError);
    }
  });
});

describe('push URLs (Sydent RemotePeer)', () => {
  it('base_replication_url with or without a slash, else https://NAME:<port or 1001>', () => {
    expect(pushUrl('b.test', null, 'https://b-int:4434')).toBe('https://b-int:4434/_matrix/identity/replicate/v1/push');
    expect(pushUrl('b.test', 9, 'https://b-int:4434/sub/')).toBe(
      'https://b-int:4434/sub/_matrix/identity/replicate/v1/push',
    );
    expect(pushUrl('b.test', null, undefined)).toBe('https://b.test:1001/_matrix/identity/replicate/v1/push');
    expect(pushUrl('b.test', 4434, undefined)).toBe('https://b.test:4434/_matrix/identity/replicate/v1/push');
  });
});

describe('the certificate file', () => {
  it('holds the key and the certificate in one PEM; the CN names us', async () => {
    const ca = await makeCa();
    const cert = await makePeerCert(ca, 'a.test');
    const split = splitPem(`${cert.key}\n${cert.cert}\n${ca.cert}`);
    expect(split.key).toBe(cert.key.trim());
    expect(split.certs).toHaveLength(2);
    expect(commonNameOf(split.certs[0]!)).toBe('a.test');
    expect(commonNameOf('garbage')).toBeNull();
  });
});

describe('a push sends the signature stored at bind again only when it is our key’s, for that content', () => {
  const row = (id: number, address: string, mxid: string | null, sgAssoc: string | null = null) => ({
    id,
    medium: 'email',
    address,
    mxid,
    ts: 1_000 + id,
    notBefore: mxid === null ? null : 1_000 + id,
    notAfter: mxid === null ? null : 9_000 + id,
    sgAssoc,
  });
  const wire = (r: ReturnType<typeof row>) => ({
    medium: r.medium,
    address: r.address,
    mxid: r.mxid,
    ts: r.ts,
    not_before: r.notBefore,
    not_after: r.notAfter,
  });
  const signatureOf = (signed: { signatures: Record<string, Record<string, string>> }) =>
    signed.signatures['a.test']!['ed25519:0']!;
  const message = (r: ReturnType<typeof row>) => canonicalJsonBytes(wire(r));

  it('tells our signature of a message from another key’s, another message’s and a tampered one', () => {
    const r = row(1, 'a@x.test', '@a:hs.test');
    const ours = decodeBase64(signatureOf(signJson(wire(r), 'a.test', key)));
    const publicKey = publicKeyFromSeed(key.seed);
    expect(isOwnSignature(message(r), ours, key.seed, publicKey)).toBe(true);
    const otherKey = decodeBase64(signatureOf(signJson(wire(r), 'a.test', { version: '0', seed: generateSeed() })));
    expect(isOwnSignature(message(r), otherKey, key.seed, publicKey)).toBe(false);
    expect(isOwnSignature(message(row(2, 'a@x.test', '@a:hs.test')), ours, key.seed, publicKey)).toBe(false);
    for (const at of [0, 31, 32, 63]) {
      const tampered = Uint8Array.from(ours);
      tampered[at]! ^= 1;
      expect(isOwnSignature(message(r), tampered, key.seed, publicKey)).toBe(false);
    }
    expect(isOwnSignature(message(r), ours.subarray(0, 63), key.seed, publicKey)).toBe(false);
  });

  it('knows its own signature under any key and of any message, and no other key’s', () => {
    // many keys and messages: every byte value reaches every position of the numbers the check reads
    for (let i = 0; i < 64; i++) {
      const k = { version: '0', seed: generateSeed() };
      const r = row(i, `user${i}-${'é'.repeat(i % 5)}@x.test`, `@u${i}:hs.test`);
      const ours = decodeBase64(signatureOf(signJson(wire(r), 'a.test', k)));
      expect(isOwnSignature(message(r), ours, k.seed, publicKeyFromSeed(k.seed))).toBe(true);
      expect(isOwnSignature(message(r), ours, key.seed, publicKeyFromSeed(key.seed))).toBe(false);
    }
  });

  it('every row of a batch verifies under our current key, whatever signature its stored row holds', async () => {
    const oldKey = { version: '0', seed: generateSeed() };
    const stored = (r: ReturnType<typeof row>, k: typeof key, extra: object = {}) =>
      JSON.stringify(signJson({ ...wire(r), ...extra }, 'a.test', k));
    const rows = [
      row(1, 'same@x.test', '@a:hs.test'),
      row(2, 'old-key@x.test', '@b:hs.test'),
      row(3, 'other-content@x.test', '@c:hs.test'),
      row(4, 'garbage@x.test', '@d:hs.test', '{"signatures":{"a.test":{"ed25519:0":"not base64!"}}}'),
      row(5, 'not-json@x.test', '@e:hs.test', '{'),
      row(6, 'gone@x.test', null),
    ];
    rows[0]!.sgAssoc = stored(rows[0]!, key);
    rows[1]!.sgAssoc = stored(rows[1]!, oldKey);
    rows[2]!.sgAssoc = stored(rows[2]!, key, { invites: [] });
    const batch = await buildBatch(rows, 'a.test', key);
    for (const r of rows) {
      const sent = sgAssocsOf(batch)[String(r.id)]!;
      // exactly what Sydent sends: the six fields, freshly signed
      expect(sent).toEqual(signJson(wire(r), 'a.test', key));
      expect(() => verifySignedJson(sent, 'a.test', 'ed25519:0', publicKeyFromSeed(key.seed))).not.toThrow();
    }
  });
});

describe('which batches may be in flight together', () => {
  const rows = (from: number, n: number, tombstoneAt?: number) =>
    Array.from({ length: n }, (_, i) => ({
      id: from + i,
      medium: 'email',
      address: `u${from + i}@x.test`,
      mxid: from + i === tombstoneAt ? null : `@u${from + i}:hs.test`,
      ts: 1,
      notBefore: 1,
      notAfter: 2,
    }));

  it('two batches of bindings of different 3PIDs may; an unbind in either, or a 3PID in both, may not', async () => {
    const build = (batchRows: ReturnType<typeof rows>) => buildBatch(batchRows, 'a.test', key);
    const first = await build(rows(1, 5));
    expect(mayOverlap(first, await build(rows(6, 5)))).toBe(true);
    expect(mayOverlap(first, await build(rows(6, 5, 8)))).toBe(false);
    expect(mayOverlap(await build(rows(1, 5, 1)), await build(rows(6, 5)))).toBe(false);
    // u3 rebound between the two reads: its old row in the first batch, its new one (id 9) in the second
    const rebound = rows(6, 5).map((r) => (r.id === 9 ? { ...r, address: 'u3@x.test' } : r));
    expect(mayOverlap(first, await build(rebound))).toBe(false);
  });
});
