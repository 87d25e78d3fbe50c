/**
 * The baseline server: a bare fastify 5 app answering `GET /` with `{}`, run as its own process like sydent-ts.
 * It also answers `POST /` with `{}` (fastify's default JSON parser, no hooks, no schema): the `baseline-post`
 * scenario, the ceiling of a POST with a JSON body on this machine.
 * Usage: node --import tsx bench/lib/bare-fastify.ts <port>
 */
import Fastify from 'fastify';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  process.stderr.write('usage: bare-fastify.ts <port>\n');
  process.exit(2);
}

const app = Fastify({ logger: false });
app.get('/', async () => ({}));
app.post('/', async () => ({}));
await app.listen({ host: '127.0.0.1', port });
process.stderr.write(`bare-fastify started on ${port}\n`);

const stop = () => {
  app.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
