import type { TLSSocket } from 'node:tls';

import type { FastifyInstance, FastifyRequest } from 'fastify';

import { decodePeerKey } from '../../replication/keys.js';
import type { AppContext } from '../context.js';
import { requestDeadline } from '../deadline.js';
import { MatrixError, errors } from '../errors.js';
import { parseJsonBody } from '../json-body.js';

export const PUSH_ROUTE = '/_matrix/identity/replicate/v1/push';

/**
 * The largest push accepted: about 9,000 signed associations, so a peer may send batches far larger than Sydent's
 * 100 (Sydent read any size). A larger body is 413 M_TOO_LARGE.
 */
export const PUSH_BODY_LIMIT = 4 * 1024 * 1024;

/** The replication API's own errors (Sydent's wording). */
export const replicationErrors = {
  unknownPeer: () => new MatrixError(403, 'M_UNKNOWN_PEER', 'This peer is not known to this server'),
  notJson: () => new MatrixError(400, 'M_NOT_JSON', 'This endpoint expects JSON'),
  badJson: (message = 'Malformed JSON') => new MatrixError(400, 'M_BAD_JSON', message),
  verificationFailed: (failedIds: string[]) =>
    new MatrixError(400, 'M_VERIFICATION_FAILED', 'Verification failed for one or more associations', {
      failed_ids: failedIds,
    }),
};

/** `application/json`, with or without parameters (Sydent wanted it bare; a charset is harmless). */
function isJsonContentType(header: string | string[] | undefined): boolean {
  const first = Array.isArray(header) ? header[0] : header;
  if (first === undefined) return false;
  return first.split(';', 1)[0]!.trim().toLowerCase() === 'application/json';
}

/** The subject common name of the client certificate the TLS layer verified, or null. */
export function peerCommonName(req: FastifyRequest): string | null {
  const socket = req.raw.socket as Partial<TLSSocket>;
  if (typeof socket.getPeerCertificate !== 'function' || socket.authorized !== true) return null;
  const cn = socket.getPeerCertificate().subject?.CN;
  const name = Array.isArray(cn) ? cn[0] : cn;
  return typeof name === 'string' && name !== '' ? name : null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * `POST /_matrix/identity/replicate/v1/push`, on the replication listener (mutual TLS) only. The peer is the
 * client certificate's common name; each association must be signed by it; the batch is stored whole or not at
 * all. Checks in Sydent's order: peer (403), content type, JSON, `sgAssocs`, then the associations.
 */
export async function replicateRoutes(app: FastifyInstance, opts: { ctx: AppContext }): Promise<void> {
  const { ctx } = opts;
  // stored keys known to decode: checked once, not per push
  const usable = new Set<string>();

  // The body is taken as bytes whatever its type, and judged by the handler, after the peer check.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: PUSH_BODY_LIMIT }, (_req, body, done) =>
    done(null, body),
  );

  app.post(PUSH_ROUTE, { bodyLimit: PUSH_BODY_LIMIT }, async (req, reply) => {
    const name = peerCommonName(req);
    const peer = name === null ? undefined : await ctx.reads.peers.activeByName(name);
    if (!peer || name === null) {
      req.log.warn({ commonName: name }, 'replication: push from an unknown peer refused');
      throw replicationErrors.unknownPeer();
    }
    if (!usable.has(peer.key)) {
      try {
        decodePeerKey(peer.key);
      } catch (err) {
        req.log.error({ peer: name, err }, 'replication: the stored public key of this peer is unusable');
        throw errors.unknown('The public key of this peer is unusable');
      }
      if (usable.size > 1000) usable.clear();
      usable.add(peer.key);
    }

    if (!isJsonContentType(req.headers['content-type'])) throw replicationErrors.notJson();
    // Strictly, as every body: not UTF-8, a NUL or a lone surrogate is malformed too.
    let json: unknown;
    try {
      json = parseJsonBody(Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0));
    } catch {
      json = undefined;
    }
    if (json === undefined) throw replicationErrors.badJson();
    if (!isRecord(json) || !Object.hasOwn(json, 'sgAssocs'))
      throw replicationErrors.badJson('No "sgAssocs" key in JSON');
    const sgAssocs = json['sgAssocs'];
    if (!isRecord(sgAssocs)) throw replicationErrors.badJson('"sgAssocs" must be an object');

    const outcome = await ctx.facades.replication.receivePush(
      { origin: name, peerKey: peer.key, sgAssocs },
      requestDeadline(req, ctx.config),
    );
    if (!outcome.ok) {
      req.log.warn(
        { peer: name, failed: outcome.failedIds.length, reasons: Object.entries(outcome.reasons).slice(0, 5) },
        'replication: push refused, nothing of it stored',
      );
      throw replicationErrors.verificationFailed(outcome.failedIds);
    }
    const { result } = outcome;
    if (result.inserted + result.duplicates + result.tombstones > 0)
      req.log.info({ peer: name, ...result }, 'replication: push stored');
    return reply.code(200).send({ success: true });
  });
}
