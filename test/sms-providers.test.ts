/**
 * The provider clients against loopback gateways speaking OpenMarket's and Twilio's APIs over real HTTP: the
 * request each sends, how answers and errors are read, timeouts, and the outbound address filter.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_IP_RANGE_BLACKLIST } from '../src/config/defaults.js';
import { IpGuard } from '../src/federation/ip-guard.js';
import { ProviderHttp } from '../src/sms/http.js';
import { OpenMarketProvider, SmsSendError, TwilioProvider } from '../src/sms/index.js';
import {
  OM_CREDS,
  OPENMARKET_PATH,
  startOpenMarket,
  startTwilio,
  TWILIO_CREDS,
  type FakeSmsGateway,
} from './helpers/sms-providers.js';

const allowLoopback = () => new IpGuard({ blacklist: [...DEFAULT_IP_RANGE_BLACKLIST], whitelist: ['127.0.0.0/8'] });

let om: FakeSmsGateway;
let tw: FakeSmsGateway;
const closers: (() => Promise<void>)[] = [];

beforeAll(async () => {
  om = await startOpenMarket(OM_CREDS);
  tw = await startTwilio(TWILIO_CREDS);
});
afterAll(async () => {
  for (const close of closers) await close();
  await om?.close();
  await tw?.close();
});

function openMarket(opts: { url?: string; password?: string; timeoutMs?: number; guard?: IpGuard } = {}) {
  const http = new ProviderHttp(opts.guard ?? allowLoopback(), opts.timeoutMs ?? 15_000);
  closers.push(() => http.close());
  return new OpenMarketProvider(http, {
    url: opts.url ?? `${om.base}${OPENMARKET_PATH}`,
    username: OM_CREDS.username,
    password: opts.password ?? OM_CREDS.password,
  });
}

function twilio(opts: { authToken?: string } = {}) {
  const http = new ProviderHttp(allowLoopback());
  closers.push(() => http.close());
  return new TwilioProvider(http, {
    ...TWILIO_CREDS,
    authToken: opts.authToken ?? TWILIO_CREDS.authToken,
    url: tw.base,
  });
}

async function sendError(p: Promise<unknown>): Promise<SmsSendError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(SmsSendError);
  return err as SmsSendError;
}

describe('OpenMarket', () => {
  it('POSTs the mobileTerminate JSON with Basic auth; a 202 is success with the ticket and request ids', async () => {
    const receipt = await openMarket().send({
      to: '447700900750',
      body: 'Your code is 123456',
      originator: { type: 'short', text: '12345' },
    });
    expect(receipt).toEqual({ provider: 'openmarket', id: 'ticket-1', requestId: 'req-1' });
    const req = om.requests.at(-1)!;
    expect(req.method).toBe('POST');
    expect(req.url).toBe('/sms/v4/mt');
    expect(req.headers['authorization']).toBe(
      `Basic ${Buffer.from(`${OM_CREDS.username}:${OM_CREDS.password}`).toString('base64')}`,
    );
    expect(req.headers['content-type']).toBe('application/json');
    expect(JSON.parse(req.body)).toEqual({
      mobileTerminate: {
        message: { content: 'Your code is 123456', type: 'text' },
        destination: { address: '447700900750' },
        source: { ton: 3, address: '12345' },
      },
    });
    expect(om.messages.at(-1)).toMatchObject({
      to: '447700900750',
      from: '12345',
      ton: 3,
      body: 'Your code is 123456',
    });
  });

  it('uses TON 1 for long numbers and 5 for alphanumeric senders', async () => {
    const p = openMarket();
    await p.send({ to: '447700900750', body: 'x', originator: { type: 'long', text: '447700900001' } });
    expect(om.messages.at(-1)).toMatchObject({ from: '447700900001', ton: 1 });
    await p.send({ to: '447700900750', body: 'x', originator: { type: 'alpha', text: 'Matrix' } });
    expect(om.messages.at(-1)).toMatchObject({ from: 'Matrix', ton: 5 });
  });

  it('a non-2xx answer is an error with the status, the request id and the error field', async () => {
    const bad = await sendError(
      openMarket({ password: 'wrong' }).send({
        to: '447700900750',
        body: 'x',
        originator: { type: 'alpha', text: 'M' },
      }),
    );
    expect(bad.status).toBe(401);
    expect(bad.message).toMatch(
      /^OpenMarket API responded with status 401 \(request ID: req-\d+\): Invalid credentials$/,
    );

    om.failWith = { status: 500, json: { error: { code: 5000, description: 'Internal error for 447700900750' } } };
    try {
      const down = await sendError(
        openMarket().send({ to: '447700900750', body: 'x', originator: { type: 'alpha', text: 'M' } }),
      );
      expect(down.status).toBe(500);
      expect(down.message).toBe(
        'OpenMarket API responded with status 500 (request ID: none): {"code":5000,"description":"Internal error for 44…50"}',
      );
      om.failWith = { status: 503, text: '<html>Service Unavailable</html>' };
      const html = await sendError(
        openMarket().send({ to: '447700900750', body: 'x', originator: { type: 'alpha', text: 'M' } }),
      );
      expect(html.message).toBe('OpenMarket API responded with status 503 (request ID: none)');
    } finally {
      om.failWith = null;
    }
  });

  it('no answer within the timeout is an error', async () => {
    om.hang = true;
    try {
      const started = Date.now();
      const err = await sendError(
        openMarket({ timeoutMs: 300 }).send({
          to: '447700900750',
          body: 'x',
          originator: { type: 'alpha', text: 'M' },
        }),
      );
      expect(err.status).toBeNull();
      expect(err.message).toMatch(/^OpenMarket API unreachable: /);
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      om.hang = false;
    }
  });

  it('a refused connection is an error', async () => {
    const err = await sendError(
      openMarket({ url: 'http://127.0.0.1:1/sms/v4/mt' }).send({
        to: '447700900750',
        body: 'x',
        originator: { type: 'alpha', text: 'M' },
      }),
    );
    expect(err.message).toMatch(/^OpenMarket API unreachable: .*ECONNREFUSED/);
  });

  it('ip.blacklist keeps it from loopback, by address and by name, without connecting', async () => {
    const guard = new IpGuard({ blacklist: [...DEFAULT_IP_RANGE_BLACKLIST] });
    const before = om.requests.length;
    const literal = await sendError(
      openMarket({ guard }).send({ to: '447700900750', body: 'x', originator: { type: 'alpha', text: 'M' } }),
    );
    expect(literal.message).toMatch(/127\.0\.0\.1 is refused by ip\.blacklist/);
    const named = await sendError(
      openMarket({ guard, url: `http://localhost:${om.port}${OPENMARKET_PATH}` }).send({
        to: '447700900750',
        body: 'x',
        originator: { type: 'alpha', text: 'M' },
      }),
    );
    expect(named.message).toMatch(/refused by ip\.blacklist/);
    expect(om.requests.length).toBe(before);
  });
});

describe('Twilio', () => {
  it('POSTs To/From/Body as a form with Basic SID:token; 201 is success with the message SID', async () => {
    const receipt = await twilio().send({
      to: '447700900750',
      body: 'Your code is 654321',
      originator: { type: 'long', text: '447700900001' },
    });
    expect(receipt.provider).toBe('twilio');
    expect(receipt.id).toMatch(/^SM\d{32}$/);
    const req = tw.requests.at(-1)!;
    expect(req.method).toBe('POST');
    expect(req.url).toBe(`/2010-04-01/Accounts/${TWILIO_CREDS.accountSid}/Messages.json`);
    expect(req.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(req.headers['authorization']).toBe(
      `Basic ${Buffer.from(`${TWILIO_CREDS.accountSid}:${TWILIO_CREDS.authToken}`).toString('base64')}`,
    );
    expect(Object.fromEntries(new URLSearchParams(req.body))).toEqual({
      To: '+447700900750',
      From: '+447700900001',
      Body: 'Your code is 654321',
    });
    await twilio().send({ to: '447700900750', body: 'x', originator: { type: 'alpha', text: 'Matrix' } });
    expect(tw.messages.at(-1)).toMatchObject({ to: '+447700900750', from: 'Matrix' });
  });

  it("an error carries Twilio's message and code, without the number", async () => {
    const auth = await sendError(
      twilio({ authToken: 'nope' }).send({ to: '447700900750', body: 'x', originator: { type: 'alpha', text: 'M' } }),
    );
    expect(auth.status).toBe(401);
    expect(auth.message).toBe('Twilio API responded with status 401: Authenticate (code 20003)');
    const to = await sendError(twilio().send({ to: '44', body: 'x', originator: { type: 'alpha', text: 'M' } }));
    expect(to.status).toBe(400);
    expect(to.message).toBe(
      "Twilio API responded with status 400: The 'To' number +44 is not a valid phone number. (code 21211)",
    );
    tw.failWith = {
      status: 400,
      json: { code: 21211, message: "The 'To' number +447700900750 is not a valid phone number.", status: 400 },
    };
    try {
      const redacted = await sendError(
        twilio().send({ to: '447700900750', body: 'x', originator: { type: 'alpha', text: 'M' } }),
      );
      expect(redacted.message).toBe(
        "Twilio API responded with status 400: The 'To' number 44…50 is not a valid phone number. (code 21211)",
      );
    } finally {
      tw.failWith = null;
    }
  });
});
