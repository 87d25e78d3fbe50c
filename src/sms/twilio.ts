/**
 * Twilio's Messages API: `POST /2010-04-01/Accounts/<SID>/Messages.json` with a form body (To, From, Body) and
 * HTTP Basic auth (account SID : auth token). 200/201 is accepted; an error carries Twilio's `message` and `code`.
 */
import type { Originator, TwilioConfig } from '../config/types.js';
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

export class TwilioProvider implements SmsProvider {
  readonly name = 'twilio' as const;

  constructor(
    private readonly http: ProviderHttp,
    private readonly opts: TwilioConfig,
  ) {}

  async send(message: SmsMessage, signal?: AbortSignal): Promise<SmsReceipt> {
    const url = `${this.opts.url}/2010-04-01/Accounts/${encodeURIComponent(this.opts.accountSid)}/Messages.json`;
    const form = new URLSearchParams({
      To: `+${message.to}`,
      From: twilioFrom(message.originator),
      Body: message.body,
    });
    const answer = await postToApi(
      this.http,
      'Twilio',
      url,
      {
        authorization: basicAuth(this.opts.accountSid, this.opts.authToken),
        'content-type': 'application/x-www-form-urlencoded',
        accept: 'application/json',
      },
      form.toString(),
      signal,
    );
    const json = (answer.json && typeof answer.json === 'object' ? answer.json : {}) as Record<string, unknown>;
    const requestId = header(answer.headers['twilio-request-id']);
    if (answer.status === 200 || answer.status === 201) {
      return { provider: this.name, id: typeof json['sid'] === 'string' ? json['sid'] : null, requestId };
    }
    const detail =
      json['message'] !== undefined ? `: ${excerpt(json['message'])}` : answer.text ? `: ${excerpt(answer.text)}` : '';
    const code = json['code'] !== undefined && json['code'] !== null ? ` (code ${excerpt(json['code'], 20)})` : '';
    throw new SmsSendError(
      withoutNumber(`Twilio API responded with status ${answer.status}${detail}${code}`, message.to),
      answer.status,
    );
  }

  close(): Promise<void> {
    return this.http.close();
  }
}

/** Twilio wants a phone number in E.164 with its `+`; a short code or an alphanumeric sender ID as written. */
export function twilioFrom(originator: Originator): string {
  if (originator.type === 'long' && !originator.text.startsWith('+')) return `+${originator.text}`;
  return originator.text;
}
