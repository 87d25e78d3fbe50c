import { statSync } from 'node:fs';
import { isIP } from 'node:net';
import type { HttpConfig, ListenerAddress, RequestTimeouts } from '../types.js';
import type { SectionValues } from '../values.js';
import type { BuildContext } from './context.js';
import { readRateLimit } from './email.js';

export function readHttp(v: SectionValues, ctx: BuildContext, serverName: string): HttpConfig {
  const clientApi: ListenerAddress = {
    bindAddress: v.str('clientapi.http.bind_address'),
    port: v.port('clientapi.http.port'),
  };
  const internalPort = v.optionalPort('internalapi.http.port');
  const internalApi =
    internalPort === null ? null : { bindAddress: v.str('internalapi.http.bind_address'), port: internalPort };

  let clientHttpBase = v.str('client_http_base').replace(/\/+$/, '');
  const clientHttpBaseDerived = clientHttpBase === '';
  if (clientHttpBaseDerived) {
    // The public name, never the listener's address: these links end up in mailboxes and in room state.
    clientHttpBase = `https://${serverName}`;
    if (!isHttpUrl(clientHttpBase)) {
      v.fail(
        'client_http_base',
        `is not set, and https://<server.name> (${clientHttpBase}) is not a URL: set it to the public URL`,
      );
    }
    ctx.warn(
      `config: [http] client_http_base is not set; links in emails and key_validity_url will use ${clientHttpBase}, set it to the public URL`,
    );
  } else if (!isHttpUrl(clientHttpBase)) {
    v.fail('client_http_base', 'not an absolute http:// or https:// URL');
  }

  const verifyResponseTemplate = v.path('verify_response_template');
  return {
    clientApi,
    internalApi,
    internalAdminToken: v.str('internalapi.admin_token'),
    internalAllowedHosts: readHostNames(v, 'internalapi.http.allowed_hosts'),
    replication: {
      certfile: v.path('replication.https.certfile'),
      cacert: v.path('replication.https.cacert'),
      bindAddress: v.str('replication.https.bind_address'),
      port: v.port('replication.https.port'),
    },
    obeyXForwardedFor: v.bool('obey_x_forwarded_for'),
    trustedProxies: v.cidrs('trusted_proxies'),
    submitTokenRatelimit: readRateLimit(v, 'submit_token.ratelimit'),
    drainSeconds: v.int('drain_seconds', 0),
    shutdownTimeoutMs: seconds(v, 'shutdown_timeout_seconds'),
    requestTimeouts: readRequestTimeouts(v),
    connectionCaps: {
      client: v.int('clientapi.http.max_connections', 1),
      clientPerAddress: v.int('clientapi.http.max_connections_per_address', 0),
      internal: v.int('internalapi.http.max_connections', 1),
    },
    requestDeadlineMs: Math.round(v.positiveNumber('request_deadline_seconds') * 1000),
    sendDeadlineMs: Math.round(v.positiveNumber('send_deadline_seconds') * 1000),
    federationVerifyCerts: v.bool('federation.verifycerts'),
    federationDnsServers: readDnsServers(v),
    federationCaCert: readExistingFile(v, 'federation.cacert'),
    clientHttpBase,
    clientHttpBaseDerived,
    verifyResponseTemplate: verifyResponseTemplate === '' ? null : verifyResponseTemplate,
  };
}

function readRequestTimeouts(v: SectionValues): RequestTimeouts {
  const headersMs = seconds(v, 'headers_timeout_seconds');
  const requestMs = seconds(v, 'request_timeout_seconds');
  // Node measures both from the request's first byte: a request deadline shorter than the headers' would win.
  if (requestMs < headersMs) v.fail('request_timeout_seconds', 'must not be shorter than headers_timeout_seconds');
  return { headersMs, requestMs, keepAliveMs: seconds(v, 'keepalive_timeout_seconds') };
}

/** A positive number of seconds, in milliseconds. */
function seconds(v: SectionValues, key: string): number {
  return Math.round(v.positiveNumber(key) * 1000);
}

export function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.host !== '';
  } catch {
    return false;
  }
}

/** Host names or IP addresses, without scheme or port: what a Host header names. */
function readHostNames(v: SectionValues, key: string): string[] {
  return v.list(key).map((item) => {
    const host = item
      .replace(/^\[(.*)\]$/, '$1')
      .replace(/\.$/, '')
      .toLowerCase();
    if (isIP(host) === 0 && !/^[a-z0-9-]+(\.[a-z0-9-]+)*$/.test(host)) {
      v.fail(key, `"${item}" is not a host name or IP address (no scheme, no port)`);
    }
    return isIP(host) === 6 ? new URL(`http://[${host}]`).hostname.slice(1, -1) : host;
  });
}

/** `ip`, `ip:port` or `[ipv6]:port`, the forms dns.Resolver#setServers accepts */
function readDnsServers(v: SectionValues): string[] {
  const key = 'federation.dns_servers';
  return v.list(key).map((item) => {
    const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(item);
    const v4WithPort = /^([^:]+):(\d+)$/.exec(item);
    const address = bracketed?.[1] ?? v4WithPort?.[1] ?? item;
    const port = bracketed?.[2] ?? v4WithPort?.[2];
    const family = isIP(address);
    const ok =
      (bracketed ? family === 6 : v4WithPort ? family === 4 : family !== 0) &&
      (port === undefined || (/^[1-9]\d{0,4}$/.test(port) && Number(port) <= 65535));
    if (!ok) v.fail(key, `"${item}" is not an IP address, ip:port or [ipv6]:port`);
    return item;
  });
}

/** absolute path of a file that must exist when set, or "" */
function readExistingFile(v: SectionValues, key: string): string {
  const path = v.path(key);
  if (path === '') return '';
  let isFile: boolean;
  try {
    isFile = statSync(path).isFile();
  } catch {
    v.fail(key, `${path} does not exist`);
  }
  if (!isFile) v.fail(key, `${path} is not a file`);
  return path;
}
