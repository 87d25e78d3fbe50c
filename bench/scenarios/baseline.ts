import type { Scenario } from '../lib/scenario.js';

/** The reference figure: every other scenario's ratio is its requests/s over this one's. */
const baseline: Scenario = {
  name: 'baseline',
  engines: 'none',
  description: 'bare fastify 5, `GET /` → `{}`, in its own process: the reference for every ratio',
  async run(ctx) {
    const server = await ctx.startBareFastify();
    const summary = await ctx.measure({ url: `${server.baseUrl}/` });
    return { summary };
  },
};

export default baseline;
