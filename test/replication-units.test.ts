import { describe, expect, it } from 'vitest';
import {
  encodeBase64,
  encodeBase64Url,
  generateSeed,
  publicKeyFromSeed,
  signJson,
  verifyKeyObject,
} from '../src/crypto/index.js';
import { decodePeerKey, PeerKeyError } from '../src/replication/keys.js';
import { buildBatch } from '../src/replication/outbound.js';
import { pushUrl } from '../src/replication/peer-config.js';
import { checkPush } from '../src/replication/receive.js';
import { commonNameOf, splitPem } from '../src/replication/tls.js';
import { makeCa } from './helpers/certs.js';
import { makePeerCert } from './helpers/replication.js';

const key = { version: '0', seed: generateSeed() };
const pub = verifyKeyObject(publicKeyFromSeed(key.seed));

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
  it('keys rows by their log id and signs each one', () => {
    const batch = buildBatch(
      [
        { id: 7, medium: 'email', address: 'a@x.test', mxid: '@a:x.test', ts: 5, notBefore: 5, notAfter: 9 },
        { id: 9, medium: 'email', address: 'b@x.test', mxid: null, ts: 6, notBefore: null, notAfter: null },
      ],
      'a.test',
      key,
    );
    expect(batch.lastId).toBe(9);
    expect(batch.count).toBe(2);
    expect(Object.keys(batch.body.sgAssocs)).toEqual(['7', '9']);
    expect(batch.body.sgAssocs['9']).toEqual(
      signJson(
        { medium: 'email', address: 'b@x.test', mxid: null, ts: 6, not_before: null, not_after: null },
        'a.test',
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
