/**
 * A request answered before its body has all arrived (a body over the limit, a request refused by its headers) is
 * read to its end and dropped, up to a bound. Why: many clients write the whole body before they read anything, and
 * a connection closed under them while they write is reset, so they report a broken pipe and never see the answer
 * waiting for them. The bound keeps a client from making us read for ever: past DISCARD_LIMIT bytes, or the request
 * deadline (`request_timeout_seconds`, which still runs for the unread body), the connection is closed.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';

/** Bytes of a refused body read and dropped before the connection is closed instead. */
export const DISCARD_LIMIT = 16 * 1024 * 1024;

/** Connections whose request was answered while its body was still arriving. */
const answeredEarly = new WeakSet<Duplex>();

/** Reads and drops the rest of `req`'s body (its answer is written); the connection is closed past DISCARD_LIMIT. */
export function discardRest(req: IncomingMessage): void {
  if (req.complete) return;
  const socket = req.socket;
  answeredEarly.add(socket);
  let dropped = 0;
  req.on('data', (chunk: Buffer) => {
    dropped += chunk.length;
    if (dropped > DISCARD_LIMIT) socket.destroy();
  });
  req.once('end', () => answeredEarly.delete(socket));
  req.resume();
}

/**
 * Whether the request under way on `socket` was already answered: an error of the parser or the deadline then
 * closes the connection, with no second answer after the first.
 */
export function answeredBeforeItsBody(socket: Duplex): boolean {
  return answeredEarly.has(socket);
}
