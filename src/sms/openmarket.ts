/**
 * OpenMarket's SMS API as Sydent calls it (sydent/sms/openmarket.py, sydent-behaviour §7.4): a JSON
 * `mobileTerminate` POSTed with HTTP Basic auth; any 2xx is accepted, anything else is an error carrying the
 * status, OpenMarket's request id and the answer's `error`.
 */
import { TON } from './originator.js';
import type { ProviderHttp } from './http.js';
import {
  basicAuth,
  excerpt,
  header,
  postToApi,
  SmsSendError,
  withoutNumber,
  type SmsMessage,
  type SmsProvider,
  type SmsReceipt,
} from './provider.js';

interface OpenMarketOptions {
  /** the MT endpoint, `https://smsc.openmarket.com/sms/v4/mt` */
  url: string;
  username: string;
  password: string;
}

export class OpenMarketProvider implements SmsProvider {
  readonly name = 'openmarket' as const;

  constructor(
    private readonly http: ProviderHttp,
    private readonly opts: OpenMarketOptions,
  ) {}

  async send(message: SmsMessage, signal?: AbortSignal): Promise<SmsReceipt> {
    const body = {
      mobileTerminate: {
        message: { content: message.body, type: 'text' },
        destination: { address: message.to },
        source: { ton: TON[message.originator.type], address: message.originator.text },
      },
    };
    const answer = await postToApi(
      this.http,
      'OpenMarket',
      this.opts.url,
      { authorization: basicAuth(this.opts.username, this.opts.password), 'content-type': 'application/json' },
      JSON.stringify(body),
      signal,
    );
    const requestId = header(answer.headers['x-request-id']);
    if (answer.status >= 200 && answer.status < 300) {
      // The ticket id is the last segment of Location, when OpenMarket sends one.
      const location = header(answer.headers['location']);
      const ticket =
        location
          ?.split('/')
          .filter((s) => s !== '')
          .at(-1) ?? null;
      return { provider: this.name, id: ticket, requestId };
    }
    const json = answer.json as { error?: unknown } | undefined;
    const detail = json && typeof json === 'object' && json.error !== undefined ? `: ${excerpt(json.error)}` : '';
    throw new SmsSendError(
      withoutNumber(
        `OpenMarket API responded with status ${answer.status} (request ID: ${requestId ?? 'none'})${detail}`,
        message.to,
      ),
      answer.status,
    );
  }

  close(): Promise<void> {
    return this.http.close();
  }
}
