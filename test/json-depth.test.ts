/**
 * How deep a request body may nest: 32 levels are read, 33 are refused with M_BAD_JSON, whether the body has few
 * brackets (the parser counts them and skips its walk) or many (it walks the parsed value). Sent to the email
 * requestToken, which the client listener's fast lane answers. A body that is read gets the route's own answer
 * (here: the parameters it lacks), never M_BAD_JSON.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, type TestServer } from './helpers/server.js';

const PATH = '/_matrix/identity/api/v1/validate/email/requestToken';

let t: TestServer;
beforeAll(async () => {
  t = await startTestServer();
});
afterAll(() => t?.close());

/** `{"x": …}` whose deepest list is at `depth` (the object itself is level 1). */
const nested = (depth: number): string => `{"x":${'['.repeat(depth - 1)}${']'.repeat(depth - 1)}}`;

async function post(body: string): Promise<{ status: number; errcode: unknown }> {
  const res = await fetch(t.url(PATH), { method: 'POST', headers: { 'content-type': 'application/json' }, body });
  const json = (await res.json()) as { errcode?: unknown };
  return { status: res.status, errcode: json.errcode };
}

describe('the nesting limit of a request body', () => {
  it.each([
    ['32 levels, few brackets', nested(32), 'M_MISSING_PARAMS'],
    ['33 levels, few brackets', nested(33), 'M_BAD_JSON'],
    ['3 levels among 40 lists', `{"x":[${Array.from({ length: 40 }, () => '[]').join(',')}]}`, 'M_MISSING_PARAMS'],
    [
      '33 levels among 40 lists',
      `{"y":[${Array.from({ length: 7 }, () => '[]').join(',')}],"x":${nested(33).slice(5, -1)}}`,
      'M_BAD_JSON',
    ],
    ['40 brackets inside a string', `{"x":"${'['.repeat(40)}"}`, 'M_MISSING_PARAMS'],
  ])('%s: %s', async (_name, body, errcode) => {
    expect(await post(body)).toEqual({ status: 400, errcode });
  });
});
