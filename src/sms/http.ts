/**
 * The HTTP client under the SMS providers: one undici pool, with Sydent's 15 s bound on every exchange and its
 * outbound address filter (Sydent sent SMS through its blacklisting reactor): the guard sees the very addresses
 * the socket may connect to, since it sits in the connector's own DNS lookup.
 */
import dns from 'node:dns';
import net from 'node:net';
import type { Agent } from 'undici';
import { lazy, undici } from '../util/undici.js';
import type { IpGuard } from '../federation/ip-guard.js';

export const PROVIDER_TIMEOUT_MS = 15_000;

/** Answers larger than this are cut: a provider's JSON is a few hundred bytes. */
const MAX_ANSWER_BYTES = 64 * 1024;

export interface ProviderAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  /** the body parsed as JSON, or undefined when it is not JSON */
  json: unknown;
}

/** A failure to get an answer at all: refused address, DNS, connection, TLS, timeout. */
export class ProviderUnreachableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProviderUnreachableError';
  }
}

export class ProviderHttp {
  private readonly agent: ReturnType<typeof lazy<Agent>>;

  constructor(
    private readonly guard: IpGuard,
    readonly timeoutMs: number = PROVIDER_TIMEOUT_MS,
  ) {
    this.agent = lazy(
      () =>
        new (undici().Agent)({
          connect: { timeout: timeoutMs, lookup: guardedLookup(guard) },
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
          connections: 8,
          keepAliveTimeout: 30_000,
        }),
    );
  }

  /** `signal`: the caller's cancellation, which ends the exchange as the time limit does. */
  async post(
    url: string,
    headers: Record<string, string>,
    body: string,
    cancel?: AbortSignal,
  ): Promise<ProviderAnswer> {
    const target = new URL(url);
    // An address literal is connected to without a lookup, so it is checked here.
    const literal = target.hostname.replace(/^\[(.*)\]$/, '$1');
    if (net.isIP(literal) !== 0 && !this.guard.isAllowed(literal)) {
      throw new ProviderUnreachableError(`${literal} is refused by ip.blacklist`);
    }
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const signal = cancel ? AbortSignal.any([timeout, cancel]) : timeout;
    try {
      const res = await undici().request(target, {
        method: 'POST',
        headers,
        body,
        dispatcher: this.agent.get(),
        signal,
      });
      const text = await readCapped(res.body);
      let json: unknown;
      try {
        json = text === '' ? undefined : JSON.parse(text);
      } catch {
        json = undefined;
      }
      return { status: res.statusCode, headers: res.headers, text, json };
    } catch (error) {
      if (cancel?.aborted) throw new ProviderUnreachableError('no answer in the time the request had');
      if (timeout.aborted) throw new ProviderUnreachableError(`no answer within ${this.timeoutMs / 1000} s`);
      throw new ProviderUnreachableError(describe(error));
    }
  }

  close(): Promise<void> {
    return this.agent.ifMade()?.close() ?? Promise.resolve();
  }
}

async function readCapped(body: AsyncIterable<Buffer | string> & { destroy(): unknown }): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    chunks.push(buf);
    size += buf.length;
    if (size > MAX_ANSWER_BYTES) {
      body.destroy();
      break;
    }
  }
  return Buffer.concat(chunks).subarray(0, MAX_ANSWER_BYTES).toString('utf8');
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const code = (error as { code?: unknown }).code;
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : '';
  return `${typeof code === 'string' ? `${code} ` : ''}${error.message}${cause}`;
}

/** `dns.lookup`, keeping only the addresses the guard allows; none left is an error, as a failed lookup is. */
function guardedLookup(guard: IpGuard): net.LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) {
        callback(err, '', 0);
        return;
      }
      const allowed = addresses.filter((a) => guard.isAllowed(a.address));
      const first = allowed[0];
      if (!first) {
        const refused: NodeJS.ErrnoException = new Error(
          `${hostname} resolves only to addresses refused by ip.blacklist`,
        );
        refused.code = 'EADDRNOTAVAIL';
        callback(refused, '', 0);
        return;
      }
      if (options.all) callback(null, allowed);
      else callback(null, first.address, first.family);
    });
  };
}
