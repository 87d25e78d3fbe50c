import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ConfSections } from './sydent.js';

/** The path of OpenMarket's send API, as sydent-ts posts to it. */
const OPENMARKET_PATH = '/sms/v4/mt';
const CREDS = { username: 'bench', password: 'bench' };

export interface SmsSink {
  /** `[general]` and `[sms]` for a sydent-ts that sends its SMS here (the outbound guard told to allow loopback) */
  conf: ConfSections;
  /** messages accepted since the start */
  count(): number;
  close(): Promise<void>;
}

/** A loopback OpenMarket gateway accepting every message (202 with a ticket), counting them. */
export async function startSmsSink(): Promise<SmsSink> {
  let received = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.method === 'POST' && req.url === OPENMARKET_PATH) {
        received++;
        res.writeHead(202, { location: `${OPENMARKET_PATH}/${received}` }).end();
      } else {
        res.writeHead(404).end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    conf: {
      general: { 'ip.whitelist': '127.0.0.0/8' },
      sms: { 'openmarket.url': `http://127.0.0.1:${port}${OPENMARKET_PATH}`, ...CREDS },
    },
    count: () => received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
