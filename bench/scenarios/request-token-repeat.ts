import type { Scenario } from '../lib/scenario.js';
import { REQUEST_TOKEN_PATH, emailConf } from './request-token.js';

/**
 * The same client_secret, address and send_attempt every time: after the first, Sydent's idempotency answers with
 * the existing sid and sends nothing, so this is the session path without SMTP.
 */
const requestTokenRepeat: Scenario = {
  name: 'request-token-repeat',
  engines: ['sqlite', 'postgresql'],
  description:
    '`POST …/v1/validate/email/requestToken` repeating one client_secret + address + send_attempt: existing session, no mail (the session path without SMTP)',
  async run(ctx) {
    const sink = await ctx.startSmtpSink();
    const server = await ctx.startServer({ conf: emailConf(sink.port) });
    const body = JSON.stringify({ client_secret: 'benchrepeatsecret', email: 'repeat@bench.test', send_attempt: 1 });
    const headers = { 'content-type': 'application/json' };
    const load = {
      url: server.baseUrl,
      requests: [{ method: 'POST' as const, path: REQUEST_TOKEN_PATH, headers, body }],
    };
    const summary = await ctx.measure(load);
    // against the ceiling of a JSON POST: bare fastify answering `POST /` with `{}`, sent the same request
    const paired = await ctx.pairedWithBaseline(load, undefined, {
      load: (url) => ({ url, requests: [{ method: 'POST', path: '/', headers, body }] }),
      label: '`POST /` with the same headers and body (baseline-post)',
    });
    const mails = await sink.settle();
    const notes: string[] = [];
    // the very first request (in the warm-up) creates the session and sends the one mail
    if (mails !== 1) notes.push(`expected exactly 1 mail (the first request's), the SMTP sink got ${mails}`);
    return {
      summary,
      paired,
      extras: [{ label: 'messages received by the SMTP sink (warm-up + measured + paired)', value: String(mails) }],
      notes,
      goals: [
        {
          what: 'requestToken repeat (same send_attempt, no mail) vs a bare JSON POST',
          figure: paired.ratio.toFixed(3),
          goal: '≥ 0.5',
          met: paired.ratio >= 0.5,
        },
      ],
    };
  },
};

export default requestTokenRepeat;
