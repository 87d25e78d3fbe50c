import type { TLSSocket } from 'node:tls';

import type { FastifyInstance, FastifyRequest } from 'fastify';

import { askStore } from '../../actors/supervisors/store.js';
import { lookupHash } from '../../crypto/index.js';
import { decodePeerKey } from '../../replication/keys.js';
import { checkPush } from '../../replication/receive.js';
import type { AppContext } from '../context.js';
import { MatrixError, errors } from '../errors.js';
import { parseJsonBody } from '../json-body.js';

export const PUSH_ROUTE = '/_matrix/identity/replicate/v1/push';

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
  const cn = socket.getPeerCertificate().subject?.CN as string | string[] | undefined;
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
  // verify keys by their stored text: decoded once, not per push
  const keys = new Map<string, Uint8Array>();
  const keyOf = (text: string): Uint8Array => {
    let key = keys.get(text);
    if (!key) {
      key = decodePeerKey(text).bytes;
      if (keys.size > 1000) keys.clear();
      keys.set(text, key);
    }
    return key;
  };

  // The body is taken as bytes whatever its type, and judged by the handler, after the peer check.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.post(PUSH_ROUTE, async (req, reply) => {
    const name = peerCommonName(req);
    const peer = name === null ? undefined : ctx.reads.peers.activeByName(name);
    if (!peer || name === null) {
      req.log.warn({ commonName: name }, 'replication: push from an unknown peer refused');
      throw replicationErrors.unknownPeer();
    }
    let key: Uint8Array;
    try {
      key = keyOf(peer.key);
    } catch (err) {
      req.log.error({ peer: name, err }, 'replication: the stored public key of this peer is unusable');
      throw errors.unknown('The public key of this peer is unusable');
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
    if (!isRecord(json) || !Object.hasOwn(json, 'sgAssocs')) throw replicationErrors.badJson('No "sgAssocs" key in JSON');
    const sgAssocs = json['sgAssocs'];
    if (!isRecord(sgAssocs)) throw replicationErrors.badJson('"sgAssocs" must be an object');

    const checked = checkPush(sgAssocs, name, key);
    if (!checked.ok) {
      req.log.warn(
        { peer: name, failed: checked.failedIds.length, reasons: Object.entries(checked.reasons).slice(0, 5) },
        'replication: push refused, nothing of it stored',
      );
      throw replicationErrors.verificationFailed(checked.failedIds);
    }
    if (checked.associations.length > 0) {
      const result = await askStore(ctx.system.get('store'), 'REPLICATION_APPLY', {
        originServer: name,
        associations: checked.associations,
        hash: lookupHash,
      });
      req.log.info({ peer: name, ...result }, 'replication: push stored');
    }
    return reply.code(200).send({ success: true });
  });
}
