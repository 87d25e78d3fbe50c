/**
 * The guarded HTTP(S) transport under the federation client: one undici Agent whose connector does its own DNS,
 * so the IP guard sees the very address the socket is opened to (no second lookup between the check and the
 * connect, no DNS-rebinding gap), and whose TLS identity check uses the Matrix server name rather than the SRV
 * target or the IP.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { Agent, Dispatcher, buildConnector } from 'undici';
import { lazy, undici } from '../util/undici.js';
import { FederationError } from './errors.js';
import type { IpGuard } from './ip-guard.js';
import type { FederationResolver } from './resolver.js';
import { hostForUrl } from '../matrix/server-name.js';
import { errorMessage } from '../util/error-message.js';

/** where and how to connect for one server name (the result of discovery) */
export interface ResolvedServer {
  /** the TCP target: a host name (resolved by us when connecting) or an IP address without brackets */
  host: string;
  port: number;
  /** the Host header: the server name, or the delegated `m.server` */
  hostHeader: string;
  /** the name the certificate must be valid for; an IP address means "no SNI, check IP SANs" */
  tlsServerName: string;
}

export interface RawRequest {
  method: Dispatcher.HttpMethod;
  path: string;
  headers?: Record<string, string>;
  body?: string | Buffer;
  maxBodyBytes: number;
  /** the caller's cancellation: ends the exchange as the time limit does */
  signal?: AbortSignal;
}

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export interface TransportOptions {
  ipGuard: IpGuard;
  resolver: FederationResolver;
  verifyCerts: boolean;
  /** PEM of extra CAs, trusted on top of the Mozilla roots bundled with Node */
  caCert?: string | undefined;
  /** bound on connecting (DNS + TCP + TLS), on waiting for the headers and on the whole exchange */
  timeoutMs: number;
  /** plain HTTP instead of TLS, as Sydent's `use_tls_for_federation=False`: for tests only */
  plainHttp?: boolean;
}

export class Transport {
  private readonly agent: ReturnType<typeof lazy<Agent>>;
  private readonly ca: string[] | undefined;

  constructor(private readonly opts: TransportOptions) {
    this.ca = opts.caCert ? [...tls.rootCertificates, opts.caCert] : undefined;
    this.agent = lazy(
      () =>
        new (undici().Agent)({
          connect: (options, callback) => this.connect(options, callback),
          // Sydent's pool: 5 connections per host, idle ones kept for up to 2 minutes
          connections: 5,
          keepAliveTimeout: 60_000,
          keepAliveMaxTimeout: 120_000,
        }),
    );
  }

  get scheme(): 'https' | 'http' {
    return this.opts.plainHttp ? 'http' : 'https';
  }

  /** One exchange; throws FederationError whose message says what failed (without naming the server). */
  async send(target: ResolvedServer, req: RawRequest): Promise<RawResponse> {
    const { timeoutMs } = this.opts;
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(new FederationError('timeout', `no complete response within ${seconds(timeoutMs)}`)),
      timeoutMs,
    );
    const cancel = req.signal;
    const onCancel = () =>
      controller.abort(new FederationError('timeout', 'the request that needed the answer gave up'));
    if (cancel?.aborted) onCancel();
    else cancel?.addEventListener('abort', onCancel, { once: true });
    try {
      const options = {
        // connections are pooled per TCP target; the connector learns the TLS name from `servername`
        origin: `${this.scheme}://${hostForUrl(target.host)}:${target.port}`,
        path: req.path,
        method: req.method,
        headers: { ...req.headers, host: target.hostHeader },
        body: req.body ?? null,
        signal: controller.signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
        // undici supports this option but does not declare it; an IP needs none (undici then sends no SNI)
        ...(net.isIP(target.tlsServerName) ? {} : { servername: target.tlsServerName }),
      } as Dispatcher.RequestOptions;
      const res = await this.agent.get().request(options);
      const body = await readCapped(res, req.maxBodyBytes);
      return { status: res.statusCode, headers: res.headers, body };
    } catch (err) {
      throw classify(err, controller.signal, timeoutMs);
    } finally {
      clearTimeout(timer);
      cancel?.removeEventListener('abort', onCancel);
    }
  }

  async close(): Promise<void> {
    await this.agent.ifMade()?.close();
  }

  private connect(options: buildConnector.Options, callback: buildConnector.Callback): void {
    const host = options.hostname;
    const port = Number(options.port) || (this.opts.plainHttp ? 80 : 443);
    const tlsName = options.servername || host;
    this.openSocket(host, port, tlsName).then(
      (socket) => callback(null, socket),
      (err: unknown) => callback(err instanceof Error ? err : new Error(String(err)), null),
    );
  }

  private async openSocket(host: string, port: number, tlsName: string): Promise<net.Socket> {
    const { timeoutMs } = this.opts;
    let current: net.Socket | undefined;
    let timedOut = false;
    // after the deadline a late socket is destroyed as soon as it appears instead of leaking
    const track = (s: net.Socket) => {
      current = s;
      if (timedOut) s.destroy();
    };
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        current?.destroy();
        reject(
          new FederationError(
            'timeout',
            `could not connect to ${hostForUrl(host)}:${port} within ${seconds(timeoutMs)}`,
          ),
        );
      }, timeoutMs);
    });
    const attempt = async (): Promise<net.Socket> => {
      const addresses = await this.allowedAddresses(host);
      let lastError: unknown;
      // try each allowed address in turn, as a browser would, so one dead A record does not fail the request
      for (const ip of addresses) {
        try {
          const socket = await connectTcp(ip, port, track);
          // re-check what the kernel actually connected to, before a single byte (the ClientHello) goes out
          const remote = socket.remoteAddress ?? '';
          if (!this.opts.ipGuard.isAllowed(remote)) {
            socket.destroy();
            throw new FederationError('blocked', `the address ${remote} is not allowed for outbound requests`);
          }
          if (this.opts.plainHttp) return socket;
          return await this.startTls(socket, tlsName, track);
        } catch (err) {
          lastError = err;
          if (err instanceof FederationError && err.kind !== 'connect') throw err;
        }
      }
      throw lastError;
    };
    try {
      return await Promise.race([attempt(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** the addresses we may connect to for `host`; refuses a blocked IP literal or a name with only blocked ones */
  private async allowedAddresses(host: string): Promise<string[]> {
    const guard = this.opts.ipGuard;
    if (net.isIP(host)) {
      if (!guard.isAllowed(host))
        throw new FederationError('blocked', `the address ${host} is not allowed for outbound requests`);
      return [host];
    }
    const all = await this.opts.resolver.resolveAddresses(host);
    if (all.length === 0) throw new FederationError('dns', `the name ${host} does not resolve to any address`);
    const allowed = all.filter((ip) => guard.isAllowed(ip));
    if (allowed.length === 0) {
      throw new FederationError(
        'blocked',
        `${host} resolves only to addresses not allowed for outbound requests (${all.join(', ')})`,
      );
    }
    return allowed;
  }

  private startTls(socket: net.Socket, tlsName: string, track: (s: net.Socket) => void): Promise<tls.TLSSocket> {
    const verify = this.opts.verifyCerts;
    return new Promise((resolve, reject) => {
      const secure = tls.connect({
        socket,
        // SNI must be a name; for an IP literal the IP SANs are checked instead
        servername: net.isIP(tlsName) ? undefined : tlsName,
        ALPNProtocols: ['http/1.1'],
        rejectUnauthorized: verify,
        // Sydent never checked the certificate's host name (defect 16); we check it against the server name
        checkServerIdentity: (_host, cert) => tls.checkServerIdentity(tlsName, cert),
        ...(this.ca ? { ca: this.ca } : {}),
      });
      track(secure);
      const onError = (err: Error) => {
        secure.destroy();
        reject(tlsError(err, tlsName));
      };
      secure.once('error', onError);
      secure.once('secureConnect', () => {
        secure.off('error', onError);
        resolve(secure);
      });
    });
  }
}

function connectTcp(ip: string, port: number, track: (s: net.Socket) => void): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: ip, port, noDelay: true, keepAlive: true, keepAliveInitialDelay: 60_000 });
    track(socket);
    const onError = (err: Error) => {
      socket.destroy();
      reject(new FederationError('connect', connectProblem(err, ip, port), { cause: err }));
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

async function readCapped(res: Dispatcher.ResponseData, max: number): Promise<Buffer> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) {
    res.body.destroy();
    throw tooLarge(max);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) {
      // destroying the body aborts the connection: the rest is never downloaded
      res.body.destroy();
      throw tooLarge(max);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function tooLarge(max: number): FederationError {
  return new FederationError('too_large', `the response is larger than ${max} bytes`);
}

const CONNECT_PROBLEMS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  EADDRNOTAVAIL: 'address not available',
};

function connectProblem(err: Error, ip: string, port: number): string {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  return `${CONNECT_PROBLEMS[code] ?? `could not connect (${code || err.message})`} (${hostForUrl(ip)}:${port})`;
}

const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
]);

function tlsError(err: Error, tlsName: string): FederationError {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  let what: string;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') what = `the certificate is not valid for ${tlsName}`;
  else if (UNTRUSTED.has(code)) what = 'the certificate is not signed by a trusted authority';
  else if (code === 'CERT_HAS_EXPIRED') what = 'the certificate has expired';
  else if (code === 'CERT_NOT_YET_VALID') what = 'the certificate is not yet valid';
  else if (code === 'ECONNRESET' || code === 'EPIPE') what = 'the connection was closed during the TLS handshake';
  else what = err.message;
  return new FederationError('tls', `TLS error: ${what}${code ? ` (${code})` : ''}`, { cause: err });
}

/** undici's and the socket's errors, turned into FederationErrors */
function classify(err: unknown, signal: AbortSignal, timeoutMs: number): FederationError {
  if (err instanceof FederationError) return err;
  if (signal.aborted && signal.reason instanceof FederationError) return signal.reason;
  const code = typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : '';
  const message = errorMessage(err);
  switch (code) {
    case 'UND_ERR_HEADERS_TIMEOUT':
      return new FederationError('timeout', `no response within ${seconds(timeoutMs)}`, { cause: err });
    case 'UND_ERR_BODY_TIMEOUT':
      return new FederationError('timeout', `the response stalled for ${seconds(timeoutMs)}`, { cause: err });
    case 'UND_ERR_CONNECT_TIMEOUT':
      return new FederationError('timeout', `could not connect within ${seconds(timeoutMs)}`, { cause: err });
    case 'UND_ERR_SOCKET':
      return new FederationError('connect', `the connection was closed before a complete response (${message})`, {
        cause: err,
      });
    default:
      if (CONNECT_PROBLEMS[code]) return new FederationError('connect', CONNECT_PROBLEMS[code], { cause: err });
      return new FederationError('connect', `the request failed (${code || message})`, { cause: err });
  }
}

function seconds(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}
