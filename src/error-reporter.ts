/**
 * `sentry_dsn`: every line logged at error or above is sent to Sentry as an event, tagged `sydent_server_name`
 * as Sydent tags it, with our version as the release. Only the error (type, message, stack) or the message is
 * sent: no request, no log fields, no breadcrumbs.
 *
 * Built on @sentry/core (the SDK's runtime-neutral client) with a transport on undici: @sentry/node would
 * also bring OpenTelemetry, instrumentation of every loaded module and about 90 MB of packages (a native parser, the
 * sentry CLI), for events we send by hand. Loaded only when `sentry_dsn` is set.
 */
import { createStackParser, createTransport, Scope, type BaseTransportOptions, type Transport } from '@sentry/core';
import { nodeStackLineParser, ServerRuntimeClient } from '@sentry/core/server';
import { request } from 'undici';
import type { ErrorReporter } from './log.js';

interface ErrorReporterOptions {
  dsn: string;
  serverName: string;
  release: string;
}

/** How long closing waits for events still being sent. */
const CLOSE_TIMEOUT_MS = 2_000;

export function startErrorReporter(opts: ErrorReporterOptions): ErrorReporter {
  const client = new ServerRuntimeClient({
    dsn: opts.dsn,
    release: `sydent-ts@${opts.release}`,
    serverName: opts.serverName,
    platform: 'node',
    runtime: { name: 'node', version: process.version },
    integrations: [],
    sendDefaultPii: false,
    stackParser: createStackParser(nodeStackLineParser()),
    transport: undiciTransport,
  });
  client.init();
  const scope = new Scope();
  scope.setClient(client);
  scope.setTag('sydent_server_name', opts.serverName);
  return {
    report(error) {
      if (typeof error === 'string') client.captureMessage(error, 'error', undefined, scope);
      else client.captureException(error, undefined, scope);
    },
    close: async () => {
      await client.close(CLOSE_TIMEOUT_MS);
    },
  };
}

function undiciTransport(options: BaseTransportOptions): Transport {
  return createTransport(options, async (envelope) => {
    const res = await request(options.url, { method: 'POST', body: envelope.body, headers: options.headers ?? {} });
    await res.body.dump();
    // Sentry's rate limits come back in these headers; the core transport honours them.
    const header = (name: string) => {
      const value = res.headers[name];
      return Array.isArray(value) ? (value[0] ?? null) : (value ?? null);
    };
    return {
      statusCode: res.statusCode,
      headers: { 'x-sentry-rate-limits': header('x-sentry-rate-limits'), 'retry-after': header('retry-after') },
    };
  });
}
