import type { FastifyInstance } from 'fastify';
import { normaliseAddress } from '../../matrix/index.js';
import { V2_PREFIX, type AppContext, type RouteOptions } from '../context.js';
import { JSON_TYPE, type LaneRoute } from '../fast-lane.js';
import { MatrixError, errors } from '../errors.js';
import { bodyFields } from '../validate.js';
import { objectJson } from '../../store/mappings-json.js';
import type { ImmediateReads } from '../../store/reads.js';

const bulkBody = {
  type: 'object',
  required: ['threepids'],
  properties: { threepids: {} },
} as const;

const v1LookupQuery = {
  type: 'object',
  required: ['medium', 'address'],
  properties: { medium: { type: 'string' }, address: { type: 'string' } },
} as const;

/**
 * hash_details is serialised by fast-json-stringify from this schema (only what it lists is sent). The lookup answer
 * is not: its mappings are a map of any size, which JSON.stringify writes faster (bench/README.md has the figures).
 */
const hashDetailsReply = {
  200: {
    type: 'object',
    properties: { algorithms: { type: 'array', items: { type: 'string' } }, lookup_pepper: { type: 'string' } },
  },
} as const;

const ALGORITHMS = ['none', 'sha256'];

export const V2_LOOKUP_PATH = `${V2_PREFIX}/lookup`;

/**
 * Lookups: the hot path. They read through the store's read facade, without an actor hop; the answer maps 3PIDs
 * to Matrix IDs, never the other way.
 */
export async function lookupRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx, api } = opts;
  const associations = ctx.reads.associations;

  if (api === 'v1') {
    app.get<{ Querystring: { medium: string; address: string } }>(
      '/lookup',
      { schema: { querystring: v1LookupQuery } },
      async (req) => {
        const { medium, address } = req.query;
        const row = await associations.lookup(medium, normaliseAddress(medium, address), ctx.clock.now());
        if (!row) return {};
        const signed = JSON.parse(row.sgAssoc) as { signatures?: Record<string, unknown> };
        // Replicated associations carry their origin's signature; the answer also carries ours.
        return signed.signatures?.[ctx.identity.serverName] ? signed : ctx.identity.sign(signed);
      },
    );

    app.post<{ Body: { threepids: unknown } }>('/bulk_lookup', { schema: { body: bulkBody } }, async (req) => {
      const { threepids } = req.body;
      if (!Array.isArray(threepids)) throw errors.invalidParam('threepids must be a list');
      const now = ctx.clock.now();
      const out: [string, string, string][] = [];
      for (const item of threepids) {
        if (!Array.isArray(item) || item.length !== 2 || typeof item[0] !== 'string' || typeof item[1] !== 'string') {
          throw errors.invalidParam('threepids must be a list of [medium, address] pairs');
        }
        const [medium, address] = item as [string, string];
        const row = await associations.lookup(medium, normaliseAddress(medium, address), now);
        if (row) out.push([medium, address, row.mxid]);
      }
      return { threepids: out };
    });
    return;
  }

  app.get('/hash_details', { config: { auth: 'terms' }, schema: { response: hashDetailsReply } }, async () => ({
    algorithms: ALGORITHMS,
    lookup_pepper: await associations.pepper(),
  }));

  // No body schema: v2Lookup checks the body itself, as the fast lane (`lookupLaneRoute`) that answers most of these
  // requests does; this route answers the rest (a token in the query string, a form body, a chunked one).
  app.post('/lookup', { config: { auth: 'terms' } }, async (req, reply) =>
    reply.type(JSON_TYPE).send(await v2Lookup(ctx, req.body)),
  );
}

/**
 * `POST /v2/lookup` in the client listener's fast lane (http/fast-lane.ts): answered on the spot where the store reads
 * synchronously (store/reads.ts, ImmediateReads).
 */
export function lookupLaneRoute(ctx: AppContext): LaneRoute {
  return {
    path: V2_LOOKUP_PATH,
    auth: 'terms',
    answer: (body) => {
      const immediate = ctx.reads.immediate;
      return immediate ? v2LookupNow(ctx, immediate, body) : v2Lookup(ctx, body);
    },
  };
}

const MAPPINGS_OPEN = Buffer.from('{"mappings":');
const MAPPINGS_CLOSE = Buffer.from('}');

/** The fields of a v2 lookup body, in the order a missing one is reported. */
const V2_LOOKUP_FIELDS = ['addresses', 'algorithm', 'pepper'] as const;

/** A v2 lookup body, checked. */
interface V2LookupBody {
  addresses: string[];
  algorithm: string;
  pepper: unknown;
}

/**
 * `POST /v2/lookup` once authenticated: the body checked (the errors a schema gave before, in the same order),
 * then the answer, as JSON text (or its UTF-8 bytes, for a large lookup). Shared by the route above and the fast
 * lane, so both answer every body alike.
 *
 * Plain loops and an answer written as text: this is the hot path of the busiest request, and an object keyed by
 * hashes costs a property store and a string-table entry per hash before JSON.stringify walks it again. The text
 * is what `JSON.stringify({ mappings })` gives for the same pairs, in the same order.
 */
export async function v2Lookup(ctx: AppContext, body: unknown): Promise<string | Buffer> {
  const lookup = v2LookupBody(ctx, body);
  const associations = ctx.reads.associations;
  const now = ctx.clock.now();
  checkPepper(lookup, await associations.pepper());
  if (lookup.algorithm === 'sha256') return mappingsAnswer(await associations.mappingsJson(lookup.addresses, now));
  return plainLookup(ctx, lookup.addresses, now);
}

/** v2Lookup from reads answered on the spot: the answer itself, or its promise for a lookup that waits for one. */
function v2LookupNow(
  ctx: AppContext,
  reads: ImmediateReads,
  body: unknown,
): string | Buffer | Promise<string | Buffer> {
  const lookup = v2LookupBody(ctx, body);
  const now = ctx.clock.now();
  checkPepper(lookup, reads.pepper());
  if (lookup.algorithm !== 'sha256') return plainLookup(ctx, lookup.addresses, now);
  const mappings = reads.mappingsJson(lookup.addresses, now);
  if (mappings !== undefined) return mappingsAnswer(mappings);
  return ctx.reads.associations.mappingsJson(lookup.addresses, now).then(mappingsAnswer);
}

/** The body of a v2 lookup, or throws the error to answer. */
function v2LookupBody(ctx: AppContext, body: unknown): V2LookupBody {
  const { addresses, algorithm, pepper } = bodyFields(body, V2_LOOKUP_FIELDS, []);
  if (!Array.isArray(addresses)) throw errors.invalidParam('addresses must be a list of strings');
  for (let i = 0; i < addresses.length; i++) {
    if (typeof addresses[i] !== 'string') throw errors.invalidParam('addresses must be a list of strings');
  }
  if (typeof algorithm !== 'string' || !ALGORITHMS.includes(algorithm)) {
    throw errors.invalidParam('algorithm is not supported');
  }
  if (addresses.length > ctx.config.general.addressLookupLimit) {
    throw new MatrixError(400, 'M_TOO_LARGE', 'More than the maximum amount of addresses provided');
  }
  return { addresses: addresses as string[], algorithm, pepper };
}

function checkPepper(lookup: V2LookupBody, current: string): void {
  if (lookup.pepper !== current) {
    throw new MatrixError(400, 'M_INVALID_PEPPER', "pepper does not match the server's", {
      algorithm: lookup.algorithm,
      lookup_pepper: current,
    });
  }
}

function mappingsAnswer(mappings: string | Buffer): string | Buffer {
  return typeof mappings === 'string'
    ? '{"mappings":' + mappings + '}'
    : Buffer.concat([MAPPINGS_OPEN, mappings, MAPPINGS_CLOSE]);
}

/** The `none` algorithm: "address medium" pairs in the clear. */
async function plainLookup(ctx: AppContext, addresses: string[], now: number): Promise<string> {
  const found = new Map<string, string>();
  for (const entry of addresses) {
    const parts = entry.split(/\s+/).filter(Boolean);
    if (parts.length !== 2) throw errors.invalidParam(`Invalid "address medium" pair: "${entry}"`);
    const [address, medium] = parts as [string, string];
    const row = await ctx.reads.associations.lookup(medium, normaliseAddress(medium, address), now);
    // Keyed by the string the client sent, so it can match its own request.
    if (row) found.set(entry, row.mxid);
  }
  return '{"mappings":' + objectJson(found) + '}';
}
