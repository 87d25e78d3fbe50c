import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** One event as a Sentry server receives it: the envelope's item of type `event`. */
export interface ReceivedEvent {
  /** the request path: /api/<project>/envelope/ */
  path: string;
  /** the `sentry_key` of the request (the DSN's public key) */
  key: string | null;
  event: Record<string, unknown>;
}

export interface SentryTestServer {
  /** a DSN pointing here: http://<key>@127.0.0.1:<port>/<project> */
  dsn: string;
  events: ReceivedEvent[];
  waitForEvent(predicate?: (e: ReceivedEvent) => boolean, timeoutMs?: number): Promise<ReceivedEvent>;
  close(): Promise<void>;
}

/**
 * A loopback server speaking Sentry's envelope endpoint (POST /api/<project>/envelope/): newline-separated JSON,
 * an envelope header, then item header and payload pairs. Answers 200 as Sentry does.
 */
export async function startSentryServer(project = '42', key = 'publickey'): Promise<SentryTestServer> {
  const events: ReceivedEvent[] = [];
  const waiters: Array<() => void> = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const lines = Buffer.concat(chunks)
        .toString('utf8')
        .split('\n')
        .filter((l) => l !== '');
      // lines[0] is the envelope header; then item header, payload
      for (let i = 1; i + 1 < lines.length; i += 2) {
        const header = JSON.parse(lines[i]!) as { type?: string };
        if (header.type === 'event') {
          events.push({
            path: url.pathname,
            key: url.searchParams.get('sentry_key'),
            event: JSON.parse(lines[i + 1]!) as Record<string, unknown>,
          });
        }
      }
      for (const w of waiters.splice(0)) w();
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    dsn: `http://${key}@127.0.0.1:${port}/${project}`,
    events,
    async waitForEvent(predicate = () => true, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = events.find(predicate);
        if (found) return found;
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no Sentry event in ${timeoutMs} ms (got ${events.length})`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
