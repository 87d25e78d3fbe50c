/**
 * A fake homeserver on 127.0.0.1, spoken to over real HTTP or HTTPS:
 *
 *   const hs = await startHomeserver({
 *     tls: await makeCert(ca, { hostnames: ['hs.test'] }),     // omit for plain HTTP
 *     routes: {
 *       'GET /_matrix/federation/v1/openid/userinfo': () => ({ json: { sub: '@alice:hs.test' } }),
 *       'GET /.well-known/matrix/server': () => ({ json: { 'm.server': 'hs.test:8448' }, headers: { 'cache-control': 'max-age=60' } }),
 *     },
 *   });
 *   hs.port; hs.url; hs.requests; hs.connections; await hs.close();
 *
 * Routes are keyed `METHOD /path` (the query is not part of the key). A handler gets the recorded request and
 * the body text and returns the reply (or a promise of it: one that never settles plays a homeserver that
 * never answers). Unknown routes answer 404 M_UNRECOGNIZED. `routes` may be changed while the server runs.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  /** path and query, as sent */
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface HomeserverReply {
  /** default 200 */
  status?: number;
  /** sent as JSON (wins over `text`) */
  json?: unknown;
  text?: string;
  headers?: Record<string, string>;
}

export type RouteHandler = (req: RecordedRequest, body: string) => HomeserverReply | Promise<HomeserverReply>;

export interface Homeserver {
  port: number;
  /** `http(s)://127.0.0.1:<port>` */
  url: string;
  routes: Record<string, RouteHandler>;
  requests: RecordedRequest[];
  /** TCP connections accepted so far (a refused-before-connect client leaves it at 0) */
  readonly connections: number;
  close(): Promise<void>;
}

export async function startHomeserver(opts: {
  tls?: { key: string; cert: string };
  routes: Record<string, RouteHandler>;
}): Promise<Homeserver> {
  const requests: RecordedRequest[] = [];
  let connections = 0;
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const recorded: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body };
      requests.push(recorded);
      const route = `${recorded.method} ${recorded.url.split('?')[0]}`;
      const routeHandler = hs.routes[route];
      const reply: Promise<HomeserverReply> = routeHandler
        ? Promise.resolve().then(() => routeHandler(recorded, body))
        : Promise.resolve({ status: 404, json: { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' } });
      reply.then(
        (r) => send(res, r),
        (err: unknown) => send(res, { status: 500, json: { errcode: 'M_UNKNOWN', error: String(err) } }),
      );
    });
  };
  const server = opts.tls
    ? https.createServer({ key: opts.tls.key, cert: opts.tls.cert }, handler)
    : http.createServer(handler);
  // count TCP connections, before any TLS handshake
  server.on('connection', () => connections++);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const hs: Homeserver = {
    port,
    url: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    routes: { ...opts.routes },
    requests,
    get connections() {
      return connections;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
  return hs;
}

function send(res: http.ServerResponse, reply: HomeserverReply): void {
  if (res.destroyed) return;
  const headers: Record<string, string> = { ...reply.headers };
  let body = reply.text ?? '';
  if (reply.json !== undefined) {
    body = JSON.stringify(reply.json);
    headers['content-type'] ??= 'application/json';
  }
  res.writeHead(reply.status ?? 200, headers);
  res.end(body);
}
