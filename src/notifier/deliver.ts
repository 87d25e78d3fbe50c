/**
 * Sending one homeserver callback: Sydent's `_notify` request, `POST matrix://<server><path>` with the stored JSON
 * body (`Content-Type: application/json`, no X-Matrix signature), through the guarded federation client.
 */
import type { FederationClient } from '../federation/index.js';
import type { ClaimedCallback } from '../store/callbacks.js';

/** The homeserver's answer is read (and ignored) up to this size; a larger one fails the attempt. */
export const CALLBACK_MAX_BODY_BYTES = 64 * 1024;

/** Resolves with the status of any answer; throws FederationError when no answer came (or `signal` aborted it). */
export async function deliverCallback(
  federation: FederationClient,
  row: ClaimedCallback,
  signal?: AbortSignal,
): Promise<number> {
  const res = await federation.request(row.destination, {
    method: 'POST',
    path: row.path,
    body: JSON.parse(row.body) as unknown,
    maxBodyBytes: CALLBACK_MAX_BODY_BYTES,
    ...(signal ? { signal } : {}),
  });
  return res.status;
}
