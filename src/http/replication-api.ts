/**
 * The replication listener (`replication.https.*`): HTTPS with our certificate, and a client certificate
 * required from every peer (trusted by `replication.https.cacert`, or Node's roots). Only the push endpoint; the
 * shared app gives JSON errors, 404 and 405.
 */
import type { AddressInfo } from 'node:net';

import type { FastifyInstance } from 'fastify';

import type { ListenerAddress } from '../config/types.js';
import type { Logger } from '../log.js';
import type { ReplicationTls } from '../replication/tls.js';
import { createApp } from './app.js';
import type { AppContext } from './context.js';
import type { HttpListener } from './http-listener.js';
import { replicateRoutes } from './routes/replicate.js';

interface ReplicationListener {
  app: FastifyInstance;
  /** `https://<address>:<port>` */
  url: string;
  port: number;
  /** stops it: pushes under way may finish until `until` (epoch ms; default in a second) */
  close(until?: number): Promise<void>;
}

const PUSH_GRACE_MS = 1_000;

async function createReplicationApi(ctx: AppContext, log: Logger, listener?: HttpListener): Promise<FastifyInstance> {
  const app = createApp({
    log: log.child({ listener: 'replication' }),
    metrics: ctx.metrics,
    ...(listener ? { listener } : {}),
  });
  await app.register(replicateRoutes, { ctx });
  return app;
}

/**
 * Starts the listener. The fastify app routes the requests of a Node HTTPS server of our own, which holds the
 * TLS settings (client certificates required); `listener` gives it the deadlines, caps and orderly stop of every
 * listener.
 */
export async function startReplicationListener(
  ctx: AppContext,
  log: Logger,
  tls: ReplicationTls,
  address: ListenerAddress,
  listener: HttpListener,
): Promise<ReplicationListener> {
  const app = await createReplicationApi(ctx, log, listener);
  await app.ready();
  const server = listener.httpsServer(
    {
      key: tls.key,
      cert: tls.cert,
      ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (req, res) => app.routing(req, res),
  );
  server.on('tlsClientError', (err) => log.debug({ err: err.message }, 'replication: TLS handshake refused'));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: address.bindAddress, port: address.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const shown = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  let closing: Promise<void> | null = null;
  return {
    app,
    url: `https://${shown}:${bound.port}`,
    port: bound.port,
    close: (until = Date.now() + PUSH_GRACE_MS) =>
      (closing ??= (async () => {
        // a push under way gets until then; one cut off is sent again by the peer
        await listener.stop(until);
        await app.close();
      })()),
  };
}
