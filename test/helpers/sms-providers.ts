/**
 * SMS gateways on 127.0.0.1 that speak OpenMarket's and Twilio's HTTP APIs, so the provider clients run
 * unchanged against them:
 *
 *   const om = await startOpenMarket({ username: 'om-user', password: 'om-pass' });
 *   t = await startTestServer({ conf: { general: loopbackAllowed, sms: openMarketConf(om) } });
 *   ... om.messages[0].to / .from / .ton / .body / .auth
 *   om.failWith = { status: 500, json: { error: 'down' } };   // every request fails until reset to null
 *   om.hang = true;                                           // requests are never answered
 *   om.answerAfterMs = 12_000;                                // answered (and the SMS accepted) that much later
 *
 * `requests` holds every request received (accepted or not), `messages` the SMS the gateway accepted.
 * Wrong credentials are refused as the real services refuse them (401).
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface RecordedRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface ReceivedSms {
  /** destination as the API carried it (OpenMarket: digits; Twilio: +digits) */
  to: string;
  /** originator address (OpenMarket `source.address`; Twilio `From`) */
  from: string;
  /** OpenMarket's `source.ton` (1 long, 3 short, 5 alpha); undefined for Twilio */
  ton?: number;
  body: string;
  /** the HTTP Basic credentials sent */
  auth: { user: string; password: string } | null;
  request: RecordedRequest;
}

export interface FailureReply {
  status: number;
  json?: unknown;
  text?: string;
}

export interface FakeSmsGateway {
  port: number;
  /** `http://127.0.0.1:<port>` */
  base: string;
  requests: RecordedRequest[];
  messages: ReceivedSms[];
  /** answer every request with this until set back to null */
  failWith: FailureReply | null;
  /** never answer (for timeouts) */
  hang: boolean;
  /**
   * answer only after this long (ms), as a gateway that is slow to accept does: a message whose client has gone by
   * then is not accepted (not in `messages`)
   */
  answerAfterMs: number;
  close(): Promise<void>;
}

interface GatewayReply {
  status: number;
  json?: unknown;
  text?: string;
  headers?: Record<string, string>;
}

type Handler = (req: RecordedRequest, gateway: FakeSmsGateway) => GatewayReply;

function basic(header: string | undefined): { user: string; password: string } | null {
  const m = /^Basic (.+)$/.exec(header ?? '');
  if (!m?.[1]) return null;
  const text = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = text.indexOf(':');
  return colon < 0 ? null : { user: text.slice(0, colon), password: text.slice(colon + 1) };
}

async function startGateway(handler: Handler): Promise<FakeSmsGateway> {
  const sockets = new Set<Socket>();
  const gateway: FakeSmsGateway = {
    port: 0,
    base: '',
    requests: [],
    messages: [],
    failWith: null,
    hang: false,
    answerAfterMs: 0,
    close: async () => undefined,
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const recorded: RecordedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      };
      gateway.requests.push(recorded);
      if (gateway.hang) return;
      if (gateway.answerAfterMs > 0) {
        const timer = setTimeout(() => {
          if (!req.socket.destroyed) answer(recorded, res);
        }, gateway.answerAfterMs);
        timer.unref();
        return;
      }
      answer(recorded, res);
    });
  });
  function answer(recorded: RecordedRequest, res: http.ServerResponse): void {
    const reply: GatewayReply = gateway.failWith ?? handler(recorded, gateway);
    const headers: Record<string, string> = { ...reply.headers };
    let body = '';
    if (reply.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(reply.json);
    } else if (reply.text !== undefined) {
      headers['content-type'] = 'text/plain';
      body = reply.text;
    }
    res.writeHead(reply.status, headers).end(body);
  }
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  gateway.port = (server.address() as AddressInfo).port;
  gateway.base = `http://127.0.0.1:${gateway.port}`;
  gateway.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return gateway;
}

export const OPENMARKET_PATH = '/sms/v4/mt';

/** OpenMarket's MT API: JSON mobileTerminate, Basic auth; 202 with a Location ticket and X-Request-Id. */
export function startOpenMarket(creds: { username: string; password: string }): Promise<FakeSmsGateway> {
  let n = 0;
  return startGateway((req, gw): GatewayReply => {
    const requestId = `req-${++n}`;
    if (req.method !== 'POST' || req.url !== OPENMARKET_PATH) return { status: 404, json: { error: 'Not found' } };
    const auth = basic(req.headers['authorization']);
    if (!auth || auth.user !== creds.username || auth.password !== creds.password) {
      return { status: 401, json: { error: 'Invalid credentials' }, headers: { 'x-request-id': requestId } };
    }
    if (!String(req.headers['content-type']).startsWith('application/json'))
      return { status: 415, json: { error: 'Unsupported content type' } };
    let mt: {
      mobileTerminate?: {
        message?: { content?: unknown; type?: unknown };
        destination?: { address?: unknown };
        source?: { ton?: unknown; address?: unknown };
      };
    };
    try {
      mt = JSON.parse(req.body) as typeof mt;
    } catch {
      return { status: 400, json: { error: 'Malformed JSON' } };
    }
    const m = mt.mobileTerminate;
    if (
      typeof m?.message?.content !== 'string' ||
      m.message.type !== 'text' ||
      typeof m.destination?.address !== 'string' ||
      typeof m.source?.address !== 'string' ||
      typeof m.source.ton !== 'number'
    ) {
      return { status: 400, json: { error: 'Invalid mobileTerminate' }, headers: { 'x-request-id': requestId } };
    }
    gw.messages.push({
      to: m.destination.address,
      from: m.source.address,
      ton: m.source.ton,
      body: m.message.content,
      auth,
      request: req,
    });
    return {
      status: 202,
      headers: { location: `${gw.base}${OPENMARKET_PATH}/ticket-${n}`, 'x-request-id': requestId },
    };
  });
}

/** Twilio's Messages API: form body To/From/Body, Basic auth with the account SID and auth token; 201. */
export function startTwilio(creds: { accountSid: string; authToken: string }): Promise<FakeSmsGateway> {
  let n = 0;
  return startGateway((req, gw): GatewayReply => {
    const path = `/2010-04-01/Accounts/${creds.accountSid}/Messages.json`;
    const auth = basic(req.headers['authorization']);
    if (!auth || auth.user !== creds.accountSid || auth.password !== creds.authToken) {
      return {
        status: 401,
        json: {
          code: 20003,
          message: 'Authenticate',
          more_info: 'https://www.twilio.com/docs/errors/20003',
          status: 401,
        },
      };
    }
    if (req.method !== 'POST' || req.url !== path) {
      return { status: 404, json: { code: 20404, message: 'The requested resource was not found', status: 404 } };
    }
    if (!String(req.headers['content-type']).startsWith('application/x-www-form-urlencoded')) {
      return { status: 400, json: { code: 21602, message: 'Message body is required.', status: 400 } };
    }
    const form = new URLSearchParams(req.body);
    const to = form.get('To') ?? '';
    const from = form.get('From') ?? '';
    const body = form.get('Body') ?? '';
    if (!/^\+\d{6,15}$/.test(to)) {
      return {
        status: 400,
        json: { code: 21211, message: `The 'To' number ${to} is not a valid phone number.`, status: 400 },
      };
    }
    if (from === '')
      return { status: 400, json: { code: 21603, message: "A 'From' phone number is required.", status: 400 } };
    if (body === '') return { status: 400, json: { code: 21602, message: 'Message body is required.', status: 400 } };
    gw.messages.push({ to, from, body, auth, request: req });
    const sid = `SM${String(++n).padStart(32, '0')}`;
    return { status: 201, json: { sid, status: 'queued', to, from, body, account_sid: creds.accountSid } };
  });
}

/** `[general]` values letting sydent-ts reach loopback gateways (loopback is in the default ip.blacklist). */
export const loopbackAllowed: Record<string, string> = { 'ip.whitelist': '127.0.0.0/8' };

export const OM_CREDS = { username: 'om-user', password: 'om-pass:with:colons' };
export const TWILIO_CREDS = { accountSid: 'AC0123456789abcdef0123456789abcdef', authToken: 'twilio-secret-token' };

/** `[sms]` for an OpenMarket gateway, with limits tests will not reach unless they set them. */
export function openMarketConf(gw: FakeSmsGateway, extra: Record<string, string> = {}): Record<string, string> {
  return {
    'openmarket.url': `${gw.base}${OPENMARKET_PATH}`,
    username: OM_CREDS.username,
    password: OM_CREDS.password,
    'msisdn.ratelimit.burst': '1000',
    'country.ratelimit.burst': '1000',
    ...extra,
  };
}

/** `[sms]` for a Twilio gateway. */
export function twilioConf(gw: FakeSmsGateway, extra: Record<string, string> = {}): Record<string, string> {
  return {
    provider: 'twilio',
    'twilio.url': gw.base,
    'twilio.account_sid': TWILIO_CREDS.accountSid,
    'twilio.auth_token': TWILIO_CREDS.authToken,
    'msisdn.ratelimit.burst': '1000',
    'country.ratelimit.burst': '1000',
    ...extra,
  };
}

/** The 6-digit code in an SMS body. */
export function smsCode(sms: ReceivedSms): string {
  const m = /\b(\d{6})\b/.exec(sms.body);
  if (!m?.[1]) throw new Error(`no code in the SMS: ${sms.body}`);
  return m[1];
}
