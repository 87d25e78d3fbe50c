/**
 * `POST /v2/lookup` refusals: the pepper (required even for `none`, M_INVALID_PEPPER with the current one in the
 * body), the algorithm, `address_lookup_limit` (set to 5 here), the shape of `addresses`, missing fields,
 * malformed `none` entries, and authentication.
 */
import { describe, expect, it } from 'vitest';
import { call } from './helpers/email.js';
import { V2, lookupV2, registerAccount } from './helpers/flows.js';
import { lookupFixtureForFile } from './helpers/lookup-fixture.js';

const fixture = lookupFixtureForFile(() => ({
  addressLookupLimit: 5,
  localpart: 'asker',
  address: 'known@example.com',
  mxid: '@known:hs.example',
}));

async function expectError(
  body: Record<string, unknown>,
  status: number,
  errcode: string,
  tok: string | null = fixture.token,
) {
  // null: no Authorization header at all
  const res = await lookupV2(fixture.t, tok ?? undefined, body);
  expect(res.status, `${JSON.stringify(body).slice(0, 200)}: ${res.text}`).toBe(status);
  expect(res.json['errcode']).toBe(errcode);
  expect(typeof res.json['error']).toBe('string');
  return res;
}

describe('the pepper', () => {
  it('a wrong pepper: 400 M_INVALID_PEPPER carrying the current lookup_pepper, for sha256 and for none', async () => {
    for (const [algorithm, addresses] of [
      ['sha256', [fixture.hit]],
      ['none', ['known@example.com email']],
    ] as const) {
      for (const wrong of [
        `${fixture.pepper}x`,
        '',
        fixture.pepper.toUpperCase() === fixture.pepper ? fixture.pepper.toLowerCase() : fixture.pepper.toUpperCase(),
        12345,
        null,
      ]) {
        if (wrong === fixture.pepper) continue;
        const res = await expectError({ addresses, algorithm, pepper: wrong }, 400, 'M_INVALID_PEPPER');
        expect(res.json['lookup_pepper']).toBe(fixture.pepper);
      }
    }
  });

  it('is required even for none: 400 M_MISSING_PARAMS', async () => {
    await expectError({ addresses: ['known@example.com email'], algorithm: 'none' }, 400, 'M_MISSING_PARAMS');
    await expectError({ addresses: [fixture.hit], algorithm: 'sha256' }, 400, 'M_MISSING_PARAMS');
  });

  it('the right pepper answers (control)', async () => {
    const res = await lookupV2(fixture.t, fixture.token, {
      addresses: [fixture.hit],
      algorithm: 'sha256',
      pepper: fixture.pepper,
    });
    expect(res.status, res.text).toBe(200);
    expect(res.json).toEqual({ mappings: { [fixture.hit]: '@known:hs.example' } });
  });
});

describe('algorithm, size and shape', () => {
  it('an unknown algorithm: 400 M_INVALID_PARAM', async () => {
    for (const algorithm of ['md5', 'SHA256', 'sha-256', '', 256, ['sha256'], null]) {
      await expectError({ addresses: [fixture.hit], algorithm, pepper: fixture.pepper }, 400, 'M_INVALID_PARAM');
    }
  });

  it(`more than address_lookup_limit (5) addresses: 400 M_TOO_LARGE; exactly 5 answer`, async () => {
    const six = [fixture.hit, 'a', 'b', 'c', 'd', 'e'];
    await expectError({ addresses: six, algorithm: 'sha256', pepper: fixture.pepper }, 400, 'M_TOO_LARGE');
    await expectError(
      { addresses: six.map((a) => `${a}@x.example email`), algorithm: 'none', pepper: fixture.pepper },
      400,
      'M_TOO_LARGE',
    );
    const five = await lookupV2(fixture.t, fixture.token, {
      addresses: six.slice(0, 5),
      algorithm: 'sha256',
      pepper: fixture.pepper,
    });
    expect(five.status, five.text).toBe(200);
    expect(five.json).toEqual({ mappings: { [fixture.hit]: '@known:hs.example' } });
  });

  it('addresses that are not a list of strings: 400 M_INVALID_PARAM', async () => {
    for (const addresses of [
      fixture.hit,
      { [fixture.hit]: 1 },
      5,
      null,
      [1],
      [fixture.hit, null],
      [[fixture.hit]],
      [{ address: 'known@example.com' }],
    ]) {
      await expectError({ addresses, algorithm: 'sha256', pepper: fixture.pepper }, 400, 'M_INVALID_PARAM');
    }
  });

  it('missing fields: 400 M_MISSING_PARAMS', async () => {
    const full = { addresses: [fixture.hit], algorithm: 'sha256', pepper: fixture.pepper };
    await expectError({}, 400, 'M_MISSING_PARAMS');
    for (const key of Object.keys(full)) {
      const body: Record<string, unknown> = { ...full };
      delete body[key];
      const res = await expectError(body, 400, 'M_MISSING_PARAMS');
      expect(res.json['error']).toContain(key);
    }
  });

  it('a none entry that is not "<address> <medium>": 400 M_INVALID_PARAM', async () => {
    for (const entry of ['known@example.com', 'known@example.com email extra', '', '   ', 'email']) {
      await expectError(
        { addresses: ['known@example.com email', entry], algorithm: 'none', pepper: fixture.pepper },
        400,
        'M_INVALID_PARAM',
      );
    }
  });

  it('a body that is not JSON: 400, not 500', async () => {
    const res = await call(fixture.t.url(`${V2}/lookup`), { body: '{"addresses": [', token: fixture.token });
    expect(res.status, res.text).toBe(400);
    expect(String(res.json['errcode'])).toMatch(/^M_/);
  });
});

describe('authentication', () => {
  it('no token or an unknown one: 401 M_UNAUTHORIZED, whatever the body', async () => {
    await expectError(
      { addresses: [fixture.hit], algorithm: 'sha256', pepper: fixture.pepper },
      401,
      'M_UNAUTHORIZED',
      null,
    );
    await expectError(
      { addresses: [fixture.hit], algorithm: 'sha256', pepper: fixture.pepper },
      401,
      'M_UNAUTHORIZED',
      'not-a-token',
    );
    await expectError({}, 401, 'M_UNAUTHORIZED', null);
    await expectError({ addresses: 'x', algorithm: 'md5' }, 401, 'M_UNAUTHORIZED', null);
  });

  it('a token after logout no longer works', async () => {
    const gone = await registerAccount(fixture.t, fixture.env, 'leaver');
    const logout = await call(fixture.t.url(`${V2}/account/logout`), { method: 'POST', token: gone });
    expect(logout.status, logout.text).toBe(200);
    await expectError(
      { addresses: [fixture.hit], algorithm: 'sha256', pepper: fixture.pepper },
      401,
      'M_UNAUTHORIZED',
      gone,
    );
  });
});
