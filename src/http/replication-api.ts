/**
 * The replication listener (`replication.https.*`): HTTPS with our certificate, and a client certificate
 * required from every peer (trusted by `replication.https.cacert`, or Node's roots). Only the push endpoint; the
 * shared app gives JSON errors, 404 and 405.
 */
import https from 'node:https';
import type { AddressInfo } from 'node:net';

import type { FastifyInstance } from 'fastify';

import type { ListenerAddress } from '../config/types.js';
import type { Logger } from '../log.js';
import type { ReplicationTls } from '../replication/tls.js';
import { createApp } from './app.js';
import { clientErrorAnswer } from './client-errors.js';
import type { AppContext } from './context.js';
import { replicateRoutes } from './routes/replicate.js';

export interface ReplicationListener {
  app: FastifyInstance;
  /** `https://<address>:<port>` */
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function createReplicationApi(ctx: AppContext, log: Logger): Promise<FastifyInstance> {
  const app = createApp({ log: log.child({ listener: 'replication' }), metrics: ctx.metrics });
  await app.register(replicateRoutes, { ctx });
  return app;
}

/**
 * Starts the listener. The fastify app routes the requests of a Node HTTPS server of our own, which holds the
 * TLS settings (client certificates required).
 */
export async function startReplicationListener(
  ctx: AppContext,
  log: Logger,
  tls: ReplicationTls,
  address: ListenerAddress,
): Promise<ReplicationListener> {
  const app = await createReplicationApi(ctx, log);
  await app.ready();
  const server = https.createServer(
    {
      key: tls.key,
      cert: tls.cert,
      ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
      requestCert: true,
      rejectUnauthorized: true,
      // a peer that connects and sends nothing does not hold a socket for long
      requestTimeout: 120_000,
      headersTimeout: 30_000,
      keepAliveTimeout: 30_000,
    },
    (req, res) => app.routing(req, res),
  );
  server.on('tlsClientError', (err) => log.debug({ err: err.message }, 'replication: TLS handshake refused'));
  // the app's own server is not this one: requests Node's parser refuses are answered as the other listeners do
  server.on('clientError', clientErrorAnswer({ cors: true }));
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
    close: () =>
      (closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        // a push under way gets a moment; the peer resends it anyway
        const timer = setTimeout(() => server.closeAllConnections(), 1_000);
        await closed;
        clearTimeout(timer);
        await app.close();
      })()),
  };
}
