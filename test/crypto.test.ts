import { createHash, createPrivateKey, createPublicKey, sign as nodeSign } from 'node:crypto';
import { describe, it, expect } from 'vitest';
import {
  ALPHANUMERIC,
  Base64Error,
  CanonicalJsonError,
  DIGITS,
  KeyFormatError,
  LETTERS,
  SignatureError,
  canonicalJson,
  canonicalJsonBytes,
  decodeBase64,
  encodeBase64,
  encodeBase64Url,
  formatSigningKey,
  generateSeed,
  lookupHash,
  parseSigningKey,
  publicKeyFromSeed,
  randomDigits,
  randomString,
  signJson,
  signatureKeyIds,
  verifySignedJson,
} from '../src/crypto/index.js';

// Spec appendix "Cryptographic Test Vectors".
const SEED_B64 = 'YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1';
const SEED = decodeBase64(SEED_B64);
const KEY = { version: '1', seed: SEED };
const SERVER = 'domain';
const KEY_ID = 'ed25519:1';

const utf8 = (s: string) => new TextEncoder().encode(s);

describe('base64', () => {
  const rfc: Array<[string, string]> = [
    ['', ''],
    ['f', 'Zg'],
    ['fo', 'Zm8'],
    ['foo', 'Zm9v'],
    ['foob', 'Zm9vYg'],
    ['fooba', 'Zm9vYmE'],
    ['foobar', 'Zm9vYmFy'],
  ];

  it('encodes the spec examples unpadded', () => {
    for (const [plain, b64] of rfc) {
      expect(encodeBase64(utf8(plain))).toBe(b64);
      expect(encodeBase64Url(utf8(plain))).toBe(b64);
    }
  });

  it('decodes padded and unpadded forms', () => {
    for (const [plain, b64] of rfc) {
      expect(decodeBase64(b64)).toEqual(utf8(plain));
      const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
      expect(decodeBase64(padded)).toEqual(utf8(plain));
    }
  });

  it('uses the right alphabet for each encoder and decodes both', () => {
    const bytes = new Uint8Array([0xfb, 0xff, 0xbf, 0xfe]);
    expect(encodeBase64(bytes)).toBe('+/+//g');
    expect(encodeBase64Url(bytes)).toBe('-_-__g');
    expect(decodeBase64('+/+//g')).toEqual(bytes);
    expect(decodeBase64('-_-__g')).toEqual(bytes);
    expect(decodeBase64('-_-__g==')).toEqual(bytes);
  });

  it('round-trips random bytes of every length mod 3', () => {
    for (let n = 0; n < 40; n++) {
      const bytes = new Uint8Array(n).map(() => Math.floor(Math.random() * 256));
      expect(decodeBase64(encodeBase64(bytes))).toEqual(bytes);
      expect(decodeBase64(encodeBase64Url(bytes))).toEqual(bytes);
    }
  });

  it('encodes a subarray view, not its whole backing buffer', () => {
    const whole = utf8('xxfooxx');
    expect(encodeBase64(whole.subarray(2, 5))).toBe('Zm9v');
  });

  it('accepts non-zero trailing bits, as the spec seed needs', () => {
    expect(SEED.length).toBe(32);
  });

  it.each([
    ['bad character', 'Zm9v!'],
    ['whitespace', 'Zm9v Yg'],
    ['newline', 'Zm9v\nYg'],
    ['4n+1 length', 'Zm9vY'],
    ['single char', 'Z'],
    ['too much padding', 'Zg==='],
    ['partial padding', 'Zg='],
    ['padding on full quantum', 'Zm9v='],
    ['padding with wrong total length', 'Zm8=='],
    ['data after padding', 'Zg==Zg'],
    ['padding in the middle', 'Z=g='],
    ['only padding', '=='],
    ['mixed alphabets', '+_+_'],
    ['non-ASCII', 'Zm9vÿ'],
  ])('rejects %s', (_label, input) => {
    expect(() => decodeBase64(input)).toThrow(Base64Error);
  });
});

describe('canonicalJson', () => {
  // Every input/output pair from the spec appendix "Canonical JSON: Examples".
  const appendix: Array<[string, string]> = [
    ['{}', '{}'],
    ['{\n  "one": 1,\n  "two": "Two"\n}', '{"one":1,"two":"Two"}'],
    ['{\n  "b": "2",\n  "a": "1"\n}', '{"a":"1","b":"2"}'],
    ['{"b":"2","a":"1"}', '{"a":"1","b":"2"}'],
    [
      `{"auth":{"success":true,"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe",
        "three_pids":[{"medium":"email","address":"john.doe@example.org"},
        {"medium":"msisdn","address":"123456789"}]}}}`,
      '{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}',
    ],
    ['{"a": "日本語"}', '{"a":"日本語"}'],
    ['{"本": 2, "日": 1}', '{"日":1,"本":2}'],
    ['{"a": "\\u65E5"}', '{"a":"日"}'],
    ['{"a": null}', '{"a":null}'],
    ['{"a": -0, "b": 1e10}', '{"a":0,"b":10000000000}'],
  ];

  it.each(appendix)('appendix example %#', (input, expected) => {
    expect(canonicalJson(JSON.parse(input))).toBe(expected);
  });

  it('sorts keys by code point, not UTF-16 code unit', () => {
    // U+1F600 is a surrogate pair (0xD83D...) so UTF-16 order puts it before U+FF21.
    const obj = { '\u{1F600}': 1, '\uFF21': 2, a: 3, '\u00e9': 4 };
    expect(canonicalJson(obj)).toBe('{"a":3,"é":4,"Ａ":2,"😀":1}');
  });

  it('escapes only what the grammar requires, with lowercase hex', () => {
    const s = '"\\\b\t\n\f\r\u0000\u001f\u007f/é😀';
    expect(canonicalJson(s)).toBe('"\\"\\\\\\b\\t\\n\\f\\r\\u0000\\u001f\u007f/é😀"');
  });

  it('encodes nested arrays, booleans and limits of the integer range', () => {
    const max = 2 ** 53 - 1;
    expect(canonicalJson([true, false, null, [], {}, max, -max])).toBe(`[true,false,null,[],{},${max},${-max}]`);
  });

  it('produces UTF-8 bytes', () => {
    expect(canonicalJsonBytes({ a: '日' })).toEqual(utf8('{"a":"日"}'));
  });

  it.each([
    ['a float', { a: 1.5 }],
    ['NaN', { a: NaN }],
    ['Infinity', [Infinity]],
    ['-Infinity', [-Infinity]],
    ['2**53', { a: 2 ** 53 }],
    ['-(2**53)', { a: -(2 ** 53) }],
    ['undefined in an object', { a: undefined }],
    ['undefined at top level', undefined],
    // eslint-disable-next-line no-sparse-arrays -- the hole is the input under test
    ['an array hole', [1, , 2]],
    ['a function', { f: () => 1 }],
    ['a bigint', { n: 1n }],
    ['a symbol', [Symbol('x')]],
    ['a Date', { d: new Date(0) }],
    ['a Map', { m: new Map() }],
  ])('rejects %s', (_label, value) => {
    expect(() => canonicalJson(value)).toThrow(CanonicalJsonError);
  });

  it('rejects cycles but allows shared (non-cyclic) references', () => {
    const shared = { x: 1 };
    expect(canonicalJson({ a: shared, b: shared })).toBe('{"a":{"x":1},"b":{"x":1}}');
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => canonicalJson(cyclic)).toThrow(CanonicalJsonError);
  });
});

describe('signing test vectors', () => {
  it('derives the public key, matching node:crypto', () => {
    const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), SEED]);
    const spki = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({
      format: 'der',
      type: 'spki',
    });
    const pub = publicKeyFromSeed(SEED);
    expect(pub).toEqual(new Uint8Array(spki.subarray(-32)));
    expect(encodeBase64(pub)).toBe('XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI');
  });

  it('signs {}', () => {
    expect(signJson({}, SERVER, KEY)).toEqual({
      signatures: {
        domain: {
          'ed25519:1': 'K8280/U9SSy9IVtjBuVeLr+HpOB4BQFWbg+UZaADMtTdGYI7Geitb76LTrr5QV/7Xg4ahLwYGYZzuHGZKM5ZAQ',
        },
      },
    });
  });

  it('signs {"one":1,"two":"Two"}', () => {
    expect(signJson({ one: 1, two: 'Two' }, SERVER, KEY)).toEqual({
      one: 1,
      signatures: {
        domain: {
          'ed25519:1': 'KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw',
        },
      },
      two: 'Two',
    });
  });

  it('matches node:crypto ed25519 on the same bytes', () => {
    const der = Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), SEED]);
    const pkcs8 = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    const obj = { z: 'ü', a: [1, 2, { c: null }] };
    const expected = nodeSign(null, canonicalJsonBytes(obj), pkcs8).toString('base64').replace(/=+$/, '');
    expect(signJson(obj, SERVER, KEY).signatures.domain![KEY_ID]).toBe(expected);
  });

  // The event vectors sign the *redacted* event after the content hash is added.
  // Redaction of the first event changes nothing, and of the second only empties
  // `content`, so both reduce to plain JSON signing plus a canonical-JSON hash.
  const events = [
    {
      input: {
        room_id: '!x:domain',
        sender: '@a:domain',
        origin: 'domain',
        origin_server_ts: 1000000,
        signatures: {},
        hashes: {},
        type: 'X',
        content: {},
        prev_events: [],
        auth_events: [],
        depth: 3,
        unsigned: { age_ts: 1000000 },
      },
      redact: (e: Record<string, unknown>) => e,
      hash: '5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos',
      sig: 'KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg',
    },
    {
      input: {
        content: { body: 'Here is the message content' },
        event_id: '$0:domain',
        origin: 'domain',
        origin_server_ts: 1000000,
        type: 'm.room.message',
        room_id: '!r:domain',
        sender: '@u:domain',
        signatures: {},
        unsigned: { age_ts: 1000000 },
      },
      redact: (e: Record<string, unknown>) => ({ ...e, content: {} }),
      hash: 'onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g',
      sig: 'Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA',
    },
  ];

  it.each(events)('event vector %#: content hash and signature', ({ input, redact, hash, sig }) => {
    const { signatures: _s, unsigned: _u, hashes: _h, ...hashed } = input as Record<string, unknown>;
    const digest = createHash('sha256').update(canonicalJsonBytes(hashed)).digest();
    expect(encodeBase64(digest)).toBe(hash);

    const withHash = { ...input, hashes: { sha256: hash } };
    const signed = signJson(redact(withHash), SERVER, KEY);
    expect(signed.signatures.domain![KEY_ID]).toBe(sig);
  });
});

describe('signJson', () => {
  it('does not mutate its input', () => {
    const input = {
      a: 1,
      signatures: { other: { 'ed25519:x': 'abc' }, domain: { 'ed25519:0': 'old' } },
      unsigned: { age: 5 },
    };
    const snapshot = structuredClone(input);
    const signed = signJson(input, SERVER, KEY);
    expect(input).toEqual(snapshot);
    expect(signed).not.toBe(input);
    expect(signed.signatures.domain).not.toBe(input.signatures.domain);
  });

  it('keeps other signatures, restores unsigned, and ignores both when signing', () => {
    const input = {
      one: 1,
      two: 'Two',
      signatures: { other: { 'ed25519:x': 'abc' }, domain: { 'ed25519:0': 'old' } },
      unsigned: { age_ts: 922834800000 },
    };
    const signed = signJson(input, SERVER, KEY);
    expect(signed.unsigned).toEqual({ age_ts: 922834800000 });
    expect(signed.signatures).toEqual({
      other: { 'ed25519:x': 'abc' },
      domain: {
        'ed25519:0': 'old',
        'ed25519:1': 'KqmLSbO39/Bzb0QIYE82zqLwsA+PDzYIpIRA2sRQ4sL53+sN6/fpNSoqE7BP7vBZhG6kYdD13EIMJpvhJI+6Bw',
      },
    });
    expect(signatureKeyIds(signed, SERVER).sort()).toEqual(['ed25519:0', 'ed25519:1']);
    expect(signatureKeyIds(signed, 'other')).toEqual(['ed25519:x']);
    expect(signatureKeyIds(signed, 'nobody')).toEqual([]);
    expect(signatureKeyIds({}, SERVER)).toEqual([]);
  });

  it('does not add unsigned when there was none', () => {
    expect('unsigned' in signJson({ a: 1 }, SERVER, KEY)).toBe(false);
  });

  it('refuses content that is not canonical JSON', () => {
    expect(() => signJson({ a: 0.5 }, SERVER, KEY)).toThrow(CanonicalJsonError);
  });

  it('treats __proto__ as an ordinary signer name', () => {
    const signed = signJson({}, '__proto__', KEY);
    expect(Object.hasOwn(signed.signatures, '__proto__')).toBe(true);
    verifySignedJson(signed, '__proto__', KEY_ID, publicKeyFromSeed(SEED));
  });

  it('keeps a __proto__ key of JSON as an own key of the signed copy, signed and sent as it came', () => {
    for (const text of ['{"__proto__":{"x":1},"a":2}', '{"__proto__":{"x":1},"a":2,"unsigned":{"u":1}}']) {
      const record = JSON.parse(text) as Record<string, unknown>;
      const signed = signJson(record, SERVER, KEY) as Record<string, unknown>;
      expect(Object.getPrototypeOf(signed)).toBe(Object.prototype);
      expect(Object.hasOwn(signed, '__proto__')).toBe(true);
      expect(JSON.stringify(signed)).toContain('"__proto__":{"x":1}');
      verifySignedJson(signed, SERVER, KEY_ID, publicKeyFromSeed(SEED));
      expect(record).not.toHaveProperty('signatures');
    }
  });
});

describe('verifySignedJson', () => {
  const pub = publicKeyFromSeed(SEED);
  const signed = signJson({ one: 1, two: 'Two', unsigned: { x: 1 } }, SERVER, KEY);

  it('accepts a valid signature, whatever is in unsigned', () => {
    expect(() => verifySignedJson(signed, SERVER, KEY_ID, pub)).not.toThrow();
    expect(() => verifySignedJson({ ...signed, unsigned: { y: 2 } }, SERVER, KEY_ID, pub)).not.toThrow();
  });

  it('round-trips with a fresh key and URL-safe signature encoding', () => {
    const key = { version: 'abc', seed: generateSeed() };
    const s = signJson({ hello: 'world' }, 'example.org', key);
    verifySignedJson(s, 'example.org', 'ed25519:abc', publicKeyFromSeed(key.seed));
    const urlSafe = structuredClone(s);
    const sig = urlSafe.signatures['example.org']!;
    sig['ed25519:abc'] = encodeBase64Url(decodeBase64(sig['ed25519:abc']!));
    verifySignedJson(urlSafe, 'example.org', 'ed25519:abc', publicKeyFromSeed(key.seed));
  });

  const expectError = (fn: () => void, message: string) => {
    expect(fn).toThrow(SignatureError);
    expect(fn).toThrow(message);
  };

  it('fails on tampered content', () => {
    expectError(() => verifySignedJson({ ...signed, one: 2 }, SERVER, KEY_ID, pub), 'signature does not verify');
    expectError(() => verifySignedJson({ ...signed, three: 3 }, SERVER, KEY_ID, pub), 'signature does not verify');
  });

  it('fails with the wrong public key', () => {
    const other = publicKeyFromSeed(generateSeed());
    expectError(() => verifySignedJson(signed, SERVER, KEY_ID, other), 'signature does not verify');
  });

  it('fails when the entity or key has not signed', () => {
    expectError(() => verifySignedJson(signed, 'elsewhere', KEY_ID, pub), 'no signature from elsewhere');
    expectError(() => verifySignedJson({ one: 1 }, SERVER, KEY_ID, pub), 'no signature from domain');
    expectError(() => verifySignedJson({ signatures: 'x' }, SERVER, KEY_ID, pub), 'no signature from domain');
    expectError(() => verifySignedJson(signed, SERVER, 'ed25519:2', pub), 'no signature with key ed25519:2');
    expectError(() => verifySignedJson(signed, 'toString', KEY_ID, pub), 'no signature from toString');
  });

  it('fails on an unsupported algorithm', () => {
    const s = { ...signed, signatures: { domain: { 'curve25519:1': 'AAAA' } } };
    expectError(() => verifySignedJson(s, SERVER, 'curve25519:1', pub), 'unsupported signing algorithm');
  });

  it('fails on undecodable or wrong-length signatures', () => {
    const withSig = (v: unknown) => ({ ...signed, signatures: { domain: { [KEY_ID]: v } } });
    expectError(() => verifySignedJson(withSig('not base64!'), SERVER, KEY_ID, pub), 'bad base64 in signature');
    expectError(() => verifySignedJson(withSig('AAAA'), SERVER, KEY_ID, pub), 'signature does not verify');
    expectError(() => verifySignedJson(withSig(42), SERVER, KEY_ID, pub), 'no signature with key');
  });

  it('fails on a malformed verification key', () => {
    expectError(() => verifySignedJson(signed, SERVER, KEY_ID, pub.subarray(0, 31)), 'not 32 bytes');
  });
});

describe('lookupHash', () => {
  it.each([
    ['alice@example.com', 'email', '4kenr7N9drpCJ4AfalmlGQVsOn3o2RHjkADUpXJWZUc'],
    ['bob@example.com', 'email', 'LJwSazmv46n0hlMlsb_iYxI0_HXEqy_yj6Jm636cdT8'],
    ['18005552067', 'msisdn', 'nlo35_T5fzSGZzJApqu8lgIudJvmOQtDaHtr-I4rU7I'],
  ])('%s %s', (address, medium, expected) => {
    expect(lookupHash(address, medium, 'matrixrocks')).toBe(expected);
  });
});

describe('signing key config value', () => {
  const seedHex = Buffer.from(SEED).toString('hex');

  it('parses the current format', () => {
    const k = parseSigningKey(`ed25519 0 ${SEED_B64}`);
    expect(k).toEqual({ alg: 'ed25519', version: '0', seed: SEED, legacyHex: false });
  });

  it('accepts padded, URL-safe and whitespace-padded seeds', () => {
    const urlSafe = encodeBase64Url(SEED);
    expect(parseSigningKey(`ed25519 a_1 ${SEED_B64}=`).seed).toEqual(SEED);
    expect(parseSigningKey(`ed25519 0 ${urlSafe}`).seed).toEqual(SEED);
    expect(parseSigningKey(`  ed25519 0 ${SEED_B64} \n`).version).toBe('0');
    expect(parseSigningKey(`ed25519 a_1 ${SEED_B64}`).version).toBe('a_1');
  });

  it('parses the legacy hex seed as version 0', () => {
    expect(parseSigningKey(seedHex)).toEqual({ alg: 'ed25519', version: '0', seed: SEED, legacyHex: true });
    expect(parseSigningKey(seedHex.toUpperCase()).seed).toEqual(SEED);
  });

  it('formats as ed25519 <version> <unpadded standard base64>', () => {
    expect(formatSigningKey({ version: '0', seed: SEED })).toBe(`ed25519 0 ${encodeBase64(SEED)}`);
    const legacy = parseSigningKey(seedHex);
    const reparsed = parseSigningKey(formatSigningKey(legacy));
    expect(reparsed).toEqual({ ...legacy, legacyHex: false });
    expect(formatSigningKey(legacy)).not.toContain('=');
  });

  it.each([
    ['empty', '', /empty/],
    ['blank', '   ', /empty/],
    ['unknown algorithm', `curve25519 0 ${SEED_B64}`, /unknown signing key algorithm/],
    ['two parts', `ed25519 ${SEED_B64}`, /2 parts/],
    ['four parts', `ed25519 0 ${SEED_B64} extra`, /4 parts/],
    ['seed not base64', 'ed25519 0 not*base64', /not valid base64/],
    ['seed too short', `ed25519 0 ${encodeBase64(SEED.subarray(0, 31))}`, /32 bytes, got 31/],
    ['seed too long', `ed25519 0 ${encodeBase64(new Uint8Array(33))}`, /32 bytes, got 33/],
    ['short hex', seedHex.slice(2), /legacy 64-character hex/],
    ['non-hex token', 'z'.repeat(64), /legacy 64-character hex/],
  ])('rejects %s', (_label, value, message) => {
    expect(() => parseSigningKey(value)).toThrow(KeyFormatError);
    expect(() => parseSigningKey(value)).toThrow(message);
  });
});

describe('random', () => {
  it('exports the expected alphabets', () => {
    expect(DIGITS).toBe('0123456789');
    expect(LETTERS).toMatch(/^[a-zA-Z]{52}$/);
    expect(ALPHANUMERIC).toMatch(/^[0-9a-zA-Z]{62}$/);
    expect(new Set(ALPHANUMERIC).size).toBe(62);
  });

  it('draws only from the alphabet, at the requested length', () => {
    expect(randomString(0, LETTERS)).toBe('');
    expect(randomString(200, LETTERS)).toMatch(/^[a-zA-Z]{200}$/);
    expect(randomString(200, ALPHANUMERIC)).toMatch(/^[0-9a-zA-Z]{200}$/);
    expect(randomDigits(6)).toMatch(/^[0-9]{6}$/);
    expect(randomString(5, 'x')).toBe('xxxxx');
  });

  it('uses every symbol', () => {
    expect(new Set(randomString(2000, DIGITS)).size).toBe(10);
  });

  it('draws every symbol as often as any other: no modulo bias toward the first ones', () => {
    // 256 = 4 × 62 + 8: a byte taken modulo 62 would draw the first 8 symbols 5 times in 256, the others 4 (25 % more)
    const drawn = randomString(620_000, ALPHANUMERIC);
    const counts = new Map<string, number>();
    for (const c of drawn) counts.set(c, (counts.get(c) ?? 0) + 1);
    expect(counts.size).toBe(62);
    const mean = (cs: string[]) => cs.reduce((sum, c) => sum + counts.get(c)!, 0) / cs.length;
    const symbols = [...ALPHANUMERIC];
    expect(Math.abs(mean(symbols.slice(0, 8)) / mean(symbols.slice(8)) - 1)).toBeLessThan(0.03);
    for (const c of symbols) expect(Math.abs(counts.get(c)! / 10_000 - 1)).toBeLessThan(0.06);
  });

  it('draws from an alphabet of more than 256 symbols too', () => {
    const big = Array.from({ length: 300 }, (_, i) => String.fromCodePoint(0x4e00 + i)).join('');
    const drawn = [...randomString(3000, big)];
    expect(drawn).toHaveLength(3000);
    expect(drawn.every((c) => big.includes(c))).toBe(true);
    expect(new Set(drawn).size).toBeGreaterThan(250);
  });

  it('rejects bad arguments', () => {
    expect(() => randomString(-1, DIGITS)).toThrow(RangeError);
    expect(() => randomString(1.5, DIGITS)).toThrow(RangeError);
    expect(() => randomString(3, '')).toThrow(RangeError);
  });

  it('generates 32-byte seeds', () => {
    const a = generateSeed();
    expect(a).toBeInstanceOf(Uint8Array);
    expect(a.length).toBe(32);
    expect(a).not.toEqual(generateSeed());
  });
});
