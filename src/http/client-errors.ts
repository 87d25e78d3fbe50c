/**
 * Requests that Node's HTTP parser refuses (a request line that is not HTTP, headers or a URL over the size limit, a
 * body framing it cannot follow) never reach fastify or the fast lane: Node raises `clientError` on the server
 * and, left alone, writes a bare status line, or fastify's own JSON. Every listener answers them here instead, as any
 * other error: a Matrix error body (with CORS headers where the listener sends them), then the connection is closed
 * (its framing is lost).
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { CORS_HEADERS } from './app.js';
import { answeredBeforeItsBody } from './discard-body.js';

interface ParserRefusal {
  status: number;
  errcode: string;
  error: string;
}

/** What a parser error code means for the client. */
function refusalOf(code: string | undefined): ParserRefusal {
  switch (code) {
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, errcode: 'M_TOO_LARGE', error: 'The request line or headers are too large' };
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return { status: 413, errcode: 'M_TOO_LARGE', error: 'The chunk extensions of the request body are too large' };
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return { status: 408, errcode: 'M_UNKNOWN', error: 'The request did not arrive in time' };
    default:
      return { status: 400, errcode: 'M_UNRECOGNIZED', error: 'The request is not valid HTTP/1.1' };
  }
}

/** How long a refused connection may linger (sending what it still had) before it is cut. */
const LINGER_MS = 2_000;

/** Connections already answered: Node's parser raises the error again for whatever else arrives on them. */
const answered = new WeakSet<Duplex>();

/**
 * The `clientError` listener of a listener's server (fastify's `clientErrorHandler`), with CORS headers unless the
 * listener sends none (the internal one).
 */
export function clientErrorAnswer(opts: { cors: boolean }): (err: Error & { code?: string }, socket: Duplex) => void {
  let cors = '';
  if (opts.cors)
    for (let i = 0; i < CORS_HEADERS.length; i += 2) cors += `${CORS_HEADERS[i]}: ${CORS_HEADERS[i + 1]}\r\n`;
  return (err, socket) => {
    if (err.code === 'ECONNRESET' || socket.destroyed || answered.has(socket)) return;
    // Its request was answered already, its body was being dropped (http/discard-body.ts): no second answer.
    if (answeredBeforeItsBody(socket)) {
      socket.destroy();
      return;
    }
    answered.add(socket);
    // As Node itself: never write into an answer that has already begun on this connection.
    const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
    if (!socket.writable || inFlight?.headersSent) {
      socket.destroy();
      return;
    }
    const { status, errcode, error } = refusalOf(err.code);
    const body = JSON.stringify({ errcode, error });
    const head =
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${cors}` +
      `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n`;
    // end, not destroy: a connection closed with unread input is reset, and the reset can overtake the answer. What
    // the client still sends is read and dropped until it closes or the linger time is up.
    socket.end(head + body);
    socket.resume();
    const timer = setTimeout(() => socket.destroy(), LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  };
}
