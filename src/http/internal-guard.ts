/**
 * What keeps web pages out of the internal listener. It binds 3PIDs without proof and shows live state, trusting
 * whoever can reach it; a browser on the same host or network can reach it too, on behalf of any page it opens.
 * So, on top of sending no CORS headers (http/app.ts, `cors: false`):
 *
 * - the Host (or an absolute-form request target) must name this listener: the address the client connected to
 *   with our port, `localhost` on a loopback connection, or a name in `internalapi.http.allowed_hosts`. A page
 *   that rebinds its own DNS name to 127.0.0.1 still sends its own name: 421.
 * - a request from a browser page of another origin (its `Origin` header) is refused: 403. Browsers send it on
 *   every POST, so a cross-origin form or `no-cors` fetch never acts, even without a body.
 * - a body must be declared `application/json`: 415. Every content type a page may send without asking first
 *   (text/plain, forms, multipart, none) is refused.
 */
import { isIP } from 'node:net';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { errors } from './errors.js';

interface InternalGuardOptions {
  /** `internalapi.http.allowed_hosts`: further host names (lower case, no port) this listener answers to */
  allowedHosts: readonly string[];
}

/** Refuses, before routing decides anything, every request a web page could have made. */
export function installInternalGuard(app: FastifyInstance, opts: InternalGuardOptions): void {
  const allowed = new Set(opts.allowedHosts);
  app.addHook('onRequest', (req, _reply, done) => {
    const authority = requestAuthority(req);
    if (authority !== undefined && !isOwnAuthority(req, authority, allowed)) {
      throw errors.misdirected(`This listener does not answer for host ${JSON.stringify(authority.slice(0, 100))}`);
    }
    const origin = req.headers.origin;
    if (origin !== undefined && !sameOrigin(origin, authority)) {
      throw errors.forbidden('Cross-origin requests are not accepted by the internal API');
    }
    if (req.method !== 'GET' && req.method !== 'HEAD' && !declaresJsonOrNoBody(req)) {
      throw errors.unsupportedMediaType('Content-Type must be application/json');
    }
    done();
  });
}

/** The authority the client addressed: an absolute-form target's (RFC 9112 §3.2.2, it wins), else Host. */
function requestAuthority(req: FastifyRequest): string | undefined {
  const target = req.raw.url ?? '/';
  if (!target.startsWith('/') && target !== '*') {
    const match = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(target);
    return match?.[1] ?? '';
  }
  return req.headers.host;
}

function isOwnAuthority(req: FastifyRequest, authority: string, allowedHosts: ReadonlySet<string>): boolean {
  const parsed = splitAuthority(authority);
  if (!parsed) return false;
  const { host, port } = parsed;
  if (allowedHosts.has(host)) return true;
  const socket = req.raw.socket;
  if ((port ?? 80) !== socket.localPort) return false;
  const local = unmapped(socket.localAddress ?? '');
  if (host === 'localhost') return isLoopback(local);
  return isIP(host) !== 0 && unmapped(host) === local;
}

/** `name`, `name:port`, `1.2.3.4:port`, `[::1]:port` → lower-cased host (no brackets, no final dot) and port. */
function splitAuthority(authority: string): { host: string; port: number | null } | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]@\s]+)(?::(\d{1,5}))?$/.exec(authority);
  if (!m) return null;
  let host = m[1]!
    .replace(/^\[|\]$/g, '')
    .replace(/\.$/, '')
    .toLowerCase();
  // One spelling of an IPv6 address, as the socket reports it (`0:0::1` is `::1`).
  if (isIP(host) === 6) host = new URL(`http://[${host}]`).hostname.slice(1, -1);
  return { host, port: m[2] === undefined ? null : Number(m[2]) };
}

/** `::ffff:127.0.0.1` (an IPv4 client on a dual-stack socket) is 127.0.0.1. */
function unmapped(address: string): string {
  const lower = address.toLowerCase();
  return lower.startsWith('::ffff:') && isIP(lower.slice(7)) === 4 ? lower.slice(7) : lower;
}

function isLoopback(address: string): boolean {
  return address === '::1' || (isIP(address) === 4 && address.startsWith('127.'));
}

/** The page's origin is this listener's own (the debug page's own requests). */
function sameOrigin(origin: string, authority: string | undefined): boolean {
  return authority !== undefined && origin.toLowerCase() === `http://${authority.toLowerCase()}`;
}

/** A body, or a declared content type, must be JSON; a POST without body and content type (curl -X POST) is fine. */
function declaresJsonOrNoBody(req: FastifyRequest): boolean {
  const contentType = req.headers['content-type'];
  if (contentType === undefined) {
    const length = req.headers['content-length'];
    return req.headers['transfer-encoding'] === undefined && (length === undefined || length === '0');
  }
  return contentType.split(';', 1)[0]!.trim().toLowerCase() === 'application/json';
}
