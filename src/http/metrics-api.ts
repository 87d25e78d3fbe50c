import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import { createApp } from './app.js';
import type { HttpListener } from './http-listener.js';

/** The Prometheus listener (`prometheus_port` / `prometheus_addr`): the text format on `/metrics` and `/`. */
export function createMetricsApi(metrics: Metrics, log: Logger, listener?: HttpListener): FastifyInstance {
  const app = createApp({ log: log.child({ listener: 'metrics' }), ...(listener ? { listener } : {}) });
  const scrape = async (_req: unknown, reply: FastifyReply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  // Scraped every few seconds: debug lines, not info.
  app.get('/metrics', { config: { requestLog: 'debug' } }, scrape);
  app.get('/', { config: { requestLog: 'debug' } }, scrape);
  return app;
}
