/**
 * HTTP/1.1 written by hand on a socket, for requests `fetch` would normalise away: percent-encoded paths kept as
 * typed, absolute-form request targets, any Host header or none, any Content-Type or none (`rawHttp`); or any bytes
 * at all, a request line that is not HTTP or a 100 kB URL, with whether the server closed the connection after its
 * answer (`rawExchange`).
 */
import net from 'node:net';

export interface RawRequest {
  method?: string;
  /** the request target exactly as sent: `/a%2Fb`, `http://x/path`, … */
  target: string;
  /** the Host header; null sends none; default: the server's `host:port` */
  host?: string | null;
  headers?: Record<string, string>;
  body?: string;
}

export interface RawReply {
  status: number;
  /** header names lower-cased */
  headers: Record<string, string>;
  body: string;
  /** the body parsed when it is JSON, else {} */
  json: Record<string, unknown>;
}

/** Sends one request on a new connection (`Connection: close`) to the listener at `baseUrl` and reads the answer. */
export function rawHttp(baseUrl: string, req: RawRequest): Promise<RawReply> {
  const url = new URL(baseUrl);
  const lines = [`${req.method ?? 'GET'} ${req.target} HTTP/1.1`];
  const host = req.host === undefined ? url.host : req.host;
  if (host !== null) lines.push(`Host: ${host}`);
  for (const [name, value] of Object.entries(req.headers ?? {})) lines.push(`${name}: ${value}`);
  if (req.body !== undefined) lines.push(`Content-Length: ${Buffer.byteLength(req.body)}`);
  lines.push('Connection: close');
  const text = `${lines.join('\r\n')}\r\n\r\n${req.body ?? ''}`;
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname.replace(/^\[|\]$/g, ''));
    const chunks: Buffer[] = [];
    socket.setTimeout(10_000, () => socket.destroy(new Error('no answer in 10 s')));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('end', () => {
      try {
        resolve(parseReply(Buffer.concat(chunks)));
      } catch (error) {
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
    socket.write(text);
  });
}

function parseReply(raw: Buffer): RawReply {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) throw new Error(`no complete answer: ${JSON.stringify(raw.subarray(0, 200).toString())}`);
  const [statusLine = '', ...headerLines] = raw.subarray(0, end).toString('latin1').split('\r\n');
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let bytes = raw.subarray(end + 4);
  if (headers['transfer-encoding'] === 'chunked') bytes = unchunk(bytes);
  const body = bytes.toString('utf8');
  let json: Record<string, unknown> = {};
  if ((headers['content-type'] ?? '').includes('application/json') && body !== '') {
    json = JSON.parse(body) as Record<string, unknown>;
  }
  return { status: Number(statusLine.split(' ')[1]), headers, body, json };
}

function unchunk(bytes: Buffer): Buffer {
  const parts: Buffer[] = [];
  let rest = bytes;
  for (;;) {
    const eol = rest.indexOf('\r\n');
    const size = parseInt(rest.subarray(0, eol).toString('latin1'), 16);
    if (!size) return Buffer.concat(parts);
    parts.push(rest.subarray(eol + 2, eol + 2 + size));
    rest = rest.subarray(eol + 2 + size + 2);
  }
}

export interface RawExchange extends RawReply {
  /** whether the server closed the connection after its answer (within the wait) */
  closed: boolean;
}

/**
 * Sends `request` as it is on a new connection to the listener at `baseUrl`, reads the first answer (its body by
 * content-length), then waits up to `closeWaitMs` for the server to close the connection.
 */
export function rawExchange(baseUrl: string, request: string | Buffer, closeWaitMs = 1_000): Promise<RawExchange> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(url.port), url.hostname.replace(/^\[|\]$/g, ''), () => socket.write(request));
    let received = Buffer.alloc(0);
    let answer: RawReply | null = null;
    let timer: NodeJS.Timeout | undefined;
    const finish = (closed: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      if (answer) resolve({ ...answer, closed });
      else
        reject(
          new Error(
            `no complete answer (${closed ? 'closed' : 'still open'}): ${JSON.stringify(received.toString('latin1'))}`,
          ),
        );
    };
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (answer) return;
      const end = received.indexOf('\r\n\r\n');
      const length =
        end < 0
          ? NaN
          : Number(/\r\ncontent-length: *(\d+)/i.exec(received.subarray(0, end).toString('latin1'))?.[1] ?? 0);
      if (end < 0 || received.length < end + 4 + length) return;
      answer = parseReply(received.subarray(0, end + 4 + length));
      timer = setTimeout(() => finish(false), closeWaitMs);
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    // a reset after the answer is a close; before it, the answer is missing
    socket.on('error', () => finish(true));
  });
}
