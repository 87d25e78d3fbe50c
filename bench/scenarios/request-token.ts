import type { AutocannonRequest } from 'autocannon';
import type { Scenario, ScenarioContext, ScenarioResult } from '../lib/scenario.js';

export const REQUEST_TOKEN_PATH = '/_matrix/identity/api/v1/validate/email/requestToken';

/** Mail on loopback to the sink, and a sender rate limit too generous to be what is measured. */
export function emailConf(smtpPort: number): Record<string, Record<string, string>> {
  return {
    email: {
      'email.smtphost': '127.0.0.1',
      'email.smtpport': String(smtpPort),
      'email.tlsmode': '0',
      'email.ratelimit_sender.burst': '1000000000',
      'email.ratelimit_sender.rate_hz': '1000000',
    },
  };
}

// Unique across the warm-up and the measured run (and across scenarios in one bench process).
let counter = 0;

/** One requestToken with a client_secret and address never used before: a new session and one mail each. */
export function uniqueRequest(): AutocannonRequest {
  return {
    method: 'POST',
    path: REQUEST_TOKEN_PATH,
    headers: { 'content-type': 'application/json' },
    setupRequest(req) {
      const n = ++counter;
      req.body = JSON.stringify({ client_secret: `benchsecret${n}`, email: `u${n}@bench.test`, send_attempt: 1 });
      return req;
    },
  };
}

/** Sessions per second and the sink's count next to the 2xx answers. */
export async function measureRequestToken(ctx: ScenarioContext, request: AutocannonRequest): Promise<ScenarioResult> {
  const sink = await ctx.startSmtpSink();
  const server = await ctx.startServer({ conf: emailConf(sink.port) });
  const summary = await ctx.measure(
    { url: server.baseUrl, requests: [request] },
    {
      // mails of warm-up requests still in flight land before the count starts
      afterWarmup: async () => {
        await sink.settle();
        sink.reset();
      },
    },
  );
  // and those of measured requests the server finished after autocannon stopped
  const mails = await sink.settle();
  const sessionsPerS = summary.ok2xx / summary.durationS;
  const notes: string[] = [];
  // Every 2xx means its mail was accepted by the sink (the answer waits for the send). Requests in flight when
  // autocannon stopped (at most one per connection) are finished by the server, mail included, but their answers
  // are not counted: so 2xx ≤ mails ≤ requests sent is expected, anything else is odd.
  if (mails < summary.ok2xx || mails > summary.sent) {
    notes.push(`SMTP mismatch: ${mails} messages for ${summary.ok2xx} 2xx answers and ${summary.sent} requests sent`);
  }
  return {
    summary,
    extras: [
      { label: 'sessions/s (2xx/s)', value: sessionsPerS.toFixed(1) },
      { label: '2xx answers (measured run)', value: String(summary.ok2xx) },
      { label: 'requests sent (measured run)', value: String(summary.sent) },
      {
        label: 'messages received by the SMTP sink (measured run)',
        value:
          mails > summary.ok2xx
            ? `${mails} (+${mails - summary.ok2xx} vs 2xx: requests in flight when autocannon stopped, mailed but answered after it)`
            : String(mails),
      },
    ],
    notes,
  };
}

const requestToken: Scenario = {
  name: 'request-token',
  description:
    '`POST /_matrix/identity/api/v1/validate/email/requestToken`, a new client_secret and address per request: new session + one mail to a loopback SMTP sink',
  run: (ctx) => measureRequestToken(ctx, uniqueRequest()),
};

export default requestToken;
