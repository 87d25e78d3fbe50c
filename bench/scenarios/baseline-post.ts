import { randomBytes } from 'node:crypto';
import type { Scenario } from '../lib/scenario.js';

/** as many distinct bodies as lookup-1 cycles */
const BODIES = 16;

/**
 * Not sydent-ts: the bare fastify baseline process answering `POST /` with `{}`, sent what lookup-1 sends (the
 * same headers, a body of the same shape and size). The ceiling a POST with a JSON body can reach here, to read
 * lookup-1's ratio against.
 */
const baselinePost: Scenario = {
  name: 'baseline-post',
  engines: 'none',
  description:
    "NOT sydent-ts: bare fastify 5, `POST /` → `{}` (default JSON parser, no hooks), with lookup-1's headers and a " +
    'body of the same shape (1 sha256 hash, algorithm, pepper): the ceiling for a JSON POST',
  async run(ctx) {
    const server = await ctx.startBareFastify();
    const b64url = (n: number) => randomBytes(n).toString('base64url');
    const headers = { authorization: `Bearer ${randomBytes(24).toString('hex')}`, 'content-type': 'application/json' };
    const pepper = b64url(4).slice(0, 5); // Sydent's peppers are 5 characters
    const requests = Array.from({ length: BODIES }, () => ({
      method: 'POST' as const,
      path: '/',
      headers,
      body: JSON.stringify({ algorithm: 'sha256', pepper, addresses: [b64url(32)] }),
    }));
    const summary = await ctx.measure({ url: server.baseUrl, requests });
    const paired = await ctx.pairedWithBaseline({ url: server.baseUrl, requests });
    return { summary, paired };
  },
};

export default baselinePost;
