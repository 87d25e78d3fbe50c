import type { FastifyInstance } from 'fastify';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics/metrics.js';
import { createApp } from './app.js';

/** The Prometheus listener (`prometheus_port` / `prometheus_addr`): the text format on `/metrics` and `/`. */
export function createMetricsApi(metrics: Metrics, log: Logger): FastifyInstance {
  const app = createApp({ log });
  const scrape = async (_req: unknown, reply: import('fastify').FastifyReply) =>
    reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  app.get('/metrics', scrape);
  app.get('/', scrape);
  return app;
}
