/**
 * The outbound federation client (Sydent's FederationHttpClient with `matrix://` URIs): discovery, then one
 * guarded exchange, with errors that say what failed in words a user can act on.
 */
import type { Dispatcher } from 'undici';
import { ServerDiscovery, WellKnownCache } from './discovery.js';
import { FederationError, unreachable } from './errors.js';
import type { IpGuard } from './ip-guard.js';
import type { FederationResolver } from './resolver.js';
import { Transport, type ResolvedServer } from './transport.js';

export const DEFAULT_FEDERATION_TIMEOUT_MS = 10_000;

export interface FederationClientOptions {
  ipGuard: IpGuard;
  resolver: FederationResolver;
  /** `[http] federation.verifycerts`: verify the chain and the host name */
  verifyCerts: boolean;
  /** PEM text of extra CAs (`[http] federation.cacert`), trusted in addition to the usual roots */
  caCert?: string;
  /** bound on each step: connecting, waiting for headers, the whole exchange (default 10 s) */
  timeoutMs?: number;
  /** the clock of the .well-known cache */
  now?: () => number;
  /** an existing cache (shared, or prepared by a test); its own clock wins over `now` */
  wellKnownCache?: WellKnownCache;
  /** tests only: the .well-known port (443) */
  wellKnownPort?: number;
  /** tests only: plain HTTP instead of HTTPS (Sydent's use_tls_for_federation=False) */
  plainHttp?: boolean;
  /** SRV weighting and cache jitter; tests make it deterministic */
  random?: () => number;
}

export interface FederationRequest {
  method: Dispatcher.HttpMethod;
  /** path and query, starting with "/" */
  path: string;
  /** sent as JSON */
  body?: unknown;
  headers?: Record<string, string>;
  /** the response body is abandoned (and the request fails with 'too_large') past this size */
  maxBodyBytes: number;
  /** the caller's cancellation (its deadline passed): the exchange is aborted */
  signal?: AbortSignal;
}

export interface FederationResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  /** the parsed body, or undefined when it is not JSON */
  json: unknown;
  text: string;
}

export class FederationClient {
  readonly discovery: ServerDiscovery;
  private readonly transport: Transport;

  constructor(opts: FederationClientOptions) {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_FEDERATION_TIMEOUT_MS;
    this.transport = new Transport({
      ipGuard: opts.ipGuard,
      resolver: opts.resolver,
      verifyCerts: opts.verifyCerts,
      caCert: opts.caCert,
      timeoutMs,
      plainHttp: opts.plainHttp ?? false,
    });
    this.discovery = new ServerDiscovery({
      resolver: opts.resolver,
      fetch: (target, req) => this.transport.send(target, req),
      scheme: this.transport.scheme,
      cache: opts.wellKnownCache ?? new WellKnownCache(opts.now ? { now: opts.now } : {}),
      ...(opts.random ? { random: opts.random } : {}),
      ...(opts.wellKnownPort !== undefined ? { wellKnownPort: opts.wellKnownPort } : {}),
    });
  }

  resolveServer(serverName: string): Promise<ResolvedServer> {
    return this.discovery.resolveServer(serverName).catch((err: unknown) => {
      throw contextualise(err, serverName, 0);
    });
  }

  /** Any status is returned; only transport failures throw. */
  async request(serverName: string, req: FederationRequest): Promise<FederationResponse> {
    if (!req.path.startsWith('/')) throw new TypeError(`federation path must start with "/": ${req.path}`);
    const headers: Record<string, string> = { 'user-agent': 'sydent-ts', ...lowerCaseKeys(req.headers ?? {}) };
    let body: string | undefined;
    if (req.body !== undefined) {
      body = JSON.stringify(req.body);
      headers['content-type'] ??= 'application/json';
    }
    try {
      const target = await this.discovery.resolveServer(serverName);
      const res = await this.transport.send(target, {
        method: req.method,
        path: req.path,
        headers,
        ...(body !== undefined ? { body } : {}),
        maxBodyBytes: req.maxBodyBytes,
        ...(req.signal ? { signal: req.signal } : {}),
      });
      const text = res.body.toString('utf8');
      return { status: res.status, headers: res.headers, json: parseJson(text), text };
    } catch (err) {
      throw contextualise(err, serverName, req.maxBodyBytes);
    }
  }

  /** GET returning the JSON body; a non-2xx status is FederationError 'http', a non-JSON body 'bad_json' */
  async getJson(serverName: string, path: string, maxBodyBytes: number): Promise<unknown> {
    return this.expectJson(
      serverName,
      await this.request(serverName, { method: 'GET', path, maxBodyBytes }),
      'GET',
      path,
    );
  }

  /** POST of a JSON body, returning the JSON answer; errors as getJson */
  async postJson(serverName: string, path: string, body: unknown, maxBodyBytes: number): Promise<unknown> {
    return this.expectJson(
      serverName,
      await this.request(serverName, { method: 'POST', path, body, maxBodyBytes }),
      'POST',
      path,
    );
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  private expectJson(serverName: string, res: FederationResponse, method: string, path: string): unknown {
    if (res.status < 200 || res.status > 299) {
      const errcode = errcodeOf(res.json);
      // the query is left out: it may hold an access token
      const what = `${method} ${path.split('?')[0]}`;
      throw new FederationError(
        'http',
        `The Matrix homeserver ${serverName} answered ${what} with HTTP ${res.status}${errcode ? ` (${errcode})` : ''}`,
        { status: res.status, ...(errcode ? { errcode } : {}) },
      );
    }
    if (res.json === undefined)
      throw new FederationError('bad_json', `The Matrix homeserver ${serverName} returned invalid JSON`);
    return res.json;
  }
}

/** the Matrix `errcode` of an error body, if any */
export function errcodeOf(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const errcode = (json as Record<string, unknown>).errcode;
  return typeof errcode === 'string' ? errcode : undefined;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function lowerCaseKeys(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
}

/** adds the server name to a transport error's message */
function contextualise(err: unknown, serverName: string, maxBodyBytes: number): FederationError {
  if (!(err instanceof FederationError)) return unreachable('connect', serverName, String(err), err);
  if (err.kind === 'too_large') {
    return new FederationError(
      'too_large',
      `The Matrix homeserver ${serverName} sent a response larger than ${maxBodyBytes} bytes`,
      {
        cause: err,
      },
    );
  }
  return unreachable(err.kind, serverName, err.message, err);
}
