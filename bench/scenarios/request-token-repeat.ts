import type { ConfSections } from '../lib/sydent.js';
import type { Scenario, ScenarioContext } from '../lib/scenario.js';
import { REQUEST_TOKEN_PATH, emailConf } from './request-token.js';

/** Where a medium's messages go: the server's config for it, and how many arrived once the load has stopped. */
interface Sink {
  conf: ConfSections;
  sent(): Promise<number>;
}

/** What a repeat of each medium sends, and where its one message (the first request's) goes. */
const MEDIA = {
  email: {
    path: REQUEST_TOKEN_PATH,
    body: { client_secret: 'benchrepeatsecret', email: 'repeat@bench.test', send_attempt: 1 },
    message: 'mail',
    async sink(ctx: ScenarioContext): Promise<Sink> {
      const smtp = await ctx.startSmtpSink();
      return { conf: emailConf(smtp.port), sent: () => smtp.settle() };
    },
  },
  msisdn: {
    path: '/_matrix/identity/api/v1/validate/msisdn/requestToken',
    body: { client_secret: 'benchrepeatsecret', country: 'GB', phone_number: '07700 900123', send_attempt: 1 },
    message: 'SMS',
    async sink(ctx: ScenarioContext): Promise<Sink> {
      const sms = await ctx.startSmsSink();
      return { conf: sms.conf, sent: () => Promise.resolve(sms.count()) };
    },
  },
} as const;

/**
 * The same client_secret, address and send_attempt every time: after the first, Sydent's idempotency answers with
 * the existing sid and sends nothing, so this is the session path without SMTP or the SMS provider.
 */
export function repeatScenario(medium: keyof typeof MEDIA): Scenario {
  const { path, message } = MEDIA[medium];
  return {
    name: medium === 'email' ? 'request-token-repeat' : `request-token-repeat-${medium}`,
    engines: ['sqlite', 'postgresql'],
    description: `\`POST …/v1/validate/${medium}/requestToken\` repeating one client_secret + address + send_attempt: existing session, no ${message} (the session path without sending)`,
    async run(ctx) {
      const sink = await MEDIA[medium].sink(ctx);
      const server = await ctx.startServer({ conf: sink.conf });
      const body = JSON.stringify(MEDIA[medium].body);
      const headers = { 'content-type': 'application/json' };
      const load = { url: server.baseUrl, requests: [{ method: 'POST' as const, path, headers, body }] };
      const summary = await ctx.measure(load);
      // against the ceiling of a JSON POST: bare fastify answering `POST /` with `{}`, sent the same request
      const paired = await ctx.pairedWithBaseline(load, undefined, {
        load: (url) => ({ url, requests: [{ method: 'POST', path: '/', headers, body }] }),
        label: '`POST /` with the same headers and body (baseline-post)',
      });
      const sent = await sink.sent();
      const notes: string[] = [];
      // the very first request (in the warm-up) creates the session and sends the one message
      if (sent !== 1) notes.push(`expected exactly 1 ${message} (the first request's), the sink got ${sent}`);
      return {
        summary,
        paired,
        extras: [{ label: `${message} received by the sink (warm-up + measured + paired)`, value: String(sent) }],
        notes,
        goals:
          medium === 'email'
            ? [
                {
                  what: 'requestToken repeat (same send_attempt, no mail) vs a bare JSON POST',
                  figure: paired.ratio.toFixed(3),
                  goal: '≥ 0.5',
                  met: paired.ratio >= 0.5,
                },
              ]
            : [],
      };
    },
  };
}

export default repeatScenario('email');
