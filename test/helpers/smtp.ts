import { SMTPServer, type SMTPServerAddress, type SMTPServerSession } from 'smtp-server';
import type { AddressInfo, Socket } from 'node:net';
import { makeCa, makeCert } from './certs.js';

/** A message the loopback server accepted. */
export interface ReceivedMail {
  /** MAIL FROM */
  from: string;
  /** RCPT TO, in order */
  to: string[];
  /** the message as received (after SMTP dot-unstuffing) */
  raw: string;
  /** whether the session was encrypted (implicit TLS or after STARTTLS) */
  secure: boolean;
  /** the user name it authenticated as, if it did */
  user: string | undefined;
}

export interface SmtpServerOptions {
  /** `none`: no TLS at all (STARTTLS not offered); `starttls`: STARTTLS offered; `ssl`: implicit TLS */
  tls?: 'none' | 'starttls' | 'ssl';
  /** PEM key and certificate; by default a leaf for localhost/127.0.0.1 signed by the test CA */
  key?: string;
  cert?: string;
  /** answer 451 to the DATA of the first N messages */
  failFirst?: number;
  /** answer 550 to every recipient, quoting the address as real servers do */
  rejectAll?: boolean;
  /** refuse a connection beyond this many at once (421 at the greeting), as servers bound a client's connections */
  maxClients?: number;
  /** answer 550 to these recipients only */
  rejectTo?: string[];
  /**
   * answer 421 and hang up at the MAIL FROM of a connection's second message, as a server that dropped a connection
   * its client had kept idle: the message never began to go out
   */
  dropReused?: boolean;
  /** require AUTH with these credentials (allowed without TLS too) */
  auth?: { user: string; pass: string };
  /**
   * Keep each message (it has arrived) but answer its DATA only once this settles: the sender does not know yet,
   * so its send stays in flight until the test lets it through.
   */
  holdData?: Promise<unknown>;
  /** likewise, answer each DATA this long after the message arrived (a slow server that did take the message) */
  answerDelayMs?: number;
  /** wait this long before taking a message and answering its DATA (a slow mail server: none arrives before) */
  answerAfterMs?: number;
  /**
   * Holds each message's answer to DATA until `until` messages are held at once, or for `maxMs` at most: how many
   * mails a client sends at once shows in `maxHeld`.
   */
  hold?: { until: number; maxMs: number };
}

export interface SmtpTestServer {
  host: '127.0.0.1';
  port: number;
  /** the CA to trust for this server's certificate (undefined when a key/cert was given) */
  ca: string | undefined;
  messages: ReceivedMail[];
  /** messages whose DATA was refused (failFirst) */
  refused: number;
  /** the most messages held at once (`hold`) */
  maxHeld: number;
  /** connections accepted so far */
  connections: number;
  /** connections open now */
  openConnections: number;
  waitForMessage(predicate?: (m: ReceivedMail) => boolean, timeoutMs?: number): Promise<ReceivedMail>;
  close(): Promise<void>;
}

export interface TestCertificates {
  /** PEM of the CA that signed `cert` */
  ca: string;
  key: string;
  /** leaf for DNS localhost, IP 127.0.0.1 and ::1 */
  cert: string;
}

let certificates: Promise<TestCertificates> | null = null;

/** A CA and a leaf it signs for localhost/127.0.0.1/::1 (test/helpers/certs.ts), made once per test process. */
export function testCertificates(): Promise<TestCertificates> {
  certificates ??= (async () => {
    const ca = await makeCa('sydent-ts test SMTP CA');
    const leaf = await makeCert(ca, { hostnames: ['localhost'], ips: ['127.0.0.1', '::1'] });
    return { ca: ca.cert, key: leaf.key, cert: leaf.cert };
  })();
  return certificates;
}

const address = (a: SMTPServerAddress | false): string => (a ? a.address : '');

/** An SMTP server on 127.0.0.1 (a free port) that keeps what it receives. */
export async function startSmtpServer(opts: SmtpServerOptions = {}): Promise<SmtpTestServer> {
  const mode = opts.tls ?? 'none';
  const own = mode !== 'none' && !(opts.key && opts.cert) ? await testCertificates() : null;
  const key = opts.key ?? own?.key;
  const cert = opts.cert ?? own?.cert;

  const messages: ReceivedMail[] = [];
  const waiters: { predicate: (m: ReceivedMail) => boolean; resolve: (m: ReceivedMail) => void }[] = [];
  let dataCount = 0;
  let refused = 0;
  const held = new Set<() => void>();
  let maxHeld = 0;
  let connections = 0;
  let openConnections = 0;
  /** MAIL FROM commands by session */
  const mailsOn = new Map<string, number>();
  const hold = (answer: () => void): void => {
    if (!opts.hold) return answer();
    const release = (): void => {
      if (!held.delete(release)) return;
      clearTimeout(timer);
      answer();
    };
    const timer = setTimeout(release, opts.hold.maxMs);
    held.add(release);
    maxHeld = Math.max(maxHeld, held.size);
    if (held.size >= opts.hold.until) for (const r of [...held]) r();
  };

  const server = new SMTPServer({
    secure: mode === 'ssl',
    ...(mode === 'none' ? { hideSTARTTLS: true } : { key, cert }),
    authOptional: !opts.auth,
    allowInsecureAuth: true,
    disabledCommands: opts.auth ? [] : ['AUTH'],
    logger: false,
    ...(opts.maxClients ? { maxClients: opts.maxClients } : {}),
    onConnect(_session, callback) {
      connections++;
      openConnections++;
      callback();
    },
    onClose() {
      openConnections--;
    },
    onMailFrom(_address, session, callback) {
      const n = (mailsOn.get(session.id) ?? 0) + 1;
      mailsOn.set(session.id, n);
      if (opts.dropReused && n > 1) {
        callback(Object.assign(new Error('4.4.2 idle too long, closing'), { responseCode: 421 }));
      } else {
        callback();
      }
    },
    onAuth(auth, _session, callback) {
      if (opts.auth && auth.username === opts.auth.user && auth.password === opts.auth.pass) {
        callback(null, { user: auth.username });
      } else {
        callback(Object.assign(new Error('535 5.7.8 authentication failed'), { responseCode: 535 }));
      }
    },
    onRcptTo(address, _session, callback) {
      if (opts.rejectAll || opts.rejectTo?.includes(address.address)) {
        // Worded as Postfix words it: the refusal quotes the recipient.
        callback(
          Object.assign(new Error(`5.1.1 <${address.address}>: Recipient address rejected: mailbox unavailable`), {
            responseCode: 550,
          }),
        );
      } else {
        callback();
      }
    },
    onData(stream, session: SMTPServerSession, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (c: Buffer) => chunks.push(c));
      stream.on('end', () => {
        dataCount++;
        if (opts.failFirst && dataCount <= opts.failFirst) {
          refused++;
          callback(Object.assign(new Error('4.3.0 try again later'), { responseCode: 451 }));
          return;
        }
        const mail: ReceivedMail = {
          from: address(session.envelope.mailFrom),
          to: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks).toString('utf8'),
          secure: session.secure,
          user: typeof session.user === 'string' ? session.user : undefined,
        };
        const accept = () => {
          messages.push(mail);
          for (const w of [...waiters]) {
            if (w.predicate(mail)) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve(mail);
            }
          }
          void answer();
        };
        const answer = async () => {
          await opts.holdData?.catch(() => undefined);
          if (opts.answerDelayMs) await new Promise((r) => setTimeout(r, opts.answerDelayMs));
          callback(null);
        };
        if (opts.answerAfterMs) setTimeout(() => hold(accept), opts.answerAfterMs);
        else hold(accept);
      });
    },
  });
  server.on('error', () => undefined); // a client hanging up mid-session is not a test failure

  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.server.address() as { port: number }).port;

  return {
    host: '127.0.0.1',
    port,
    ca: own?.ca,
    messages,
    get refused() {
      return refused;
    },
    get maxHeld() {
      return maxHeld;
    },
    get connections() {
      return connections;
    },
    get openConnections() {
      return openConnections;
    },
    waitForMessage(predicate = () => true, timeoutMs = 5000) {
      const found = messages.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise<ReceivedMail>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error(`no matching message within ${timeoutMs} ms (${messages.length} received)`));
        }, timeoutMs);
        const waiter = {
          predicate,
          resolve: (m: ReceivedMail) => {
            clearTimeout(timer);
            resolve(m);
          },
        };
        waiters.push(waiter);
      });
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface SlowSmtpServer {
  port: number;
  /** DATA commands received (each answered only after the delay) */
  dataCommands: number;
  /** messages whose final dot arrived: a message is delivered once the server has all of it */
  messages: string[];
  close(): Promise<void>;
}

/**
 * An SMTP server (plain, no extensions) that answers DATA only after `dataDelayMs`, as an overloaded or throttling
 * relay does, then takes the message. A client that gives up before the 354 and closes has sent no message.
 */
export async function startSlowSmtpServer(opts: { dataDelayMs: number }): Promise<SlowSmtpServer> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const state: SlowSmtpServer = { port: 0, dataCommands: 0, messages: [], close: async () => undefined };
  const { createServer } = await import('node:net');
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.write('220 slow.test ESMTP\r\n');
    let buffer = '';
    let inData = false;
    socket.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buffer.indexOf('\r\n.\r\n');
          if (end === -1) return;
          state.messages.push(buffer.slice(0, end));
          buffer = buffer.slice(end + 5);
          inData = false;
          socket.write('250 2.0.0 queued\r\n');
          continue;
        }
        const eol = buffer.indexOf('\r\n');
        if (eol === -1) return;
        const line = buffer.slice(0, eol);
        buffer = buffer.slice(eol + 2);
        const verb = line.slice(0, 4).toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') socket.write('250 slow.test\r\n');
        else if (verb === 'MAIL' || verb === 'RCPT' || verb === 'RSET' || verb === 'NOOP')
          socket.write('250 2.0.0 ok\r\n');
        else if (verb === 'QUIT') socket.end('221 2.0.0 bye\r\n');
        else if (verb === 'DATA') {
          state.dataCommands++;
          const timer = setTimeout(() => {
            timers.delete(timer);
            if (socket.destroyed || !socket.writable) return;
            inData = true;
            socket.write('354 go ahead\r\n');
          }, opts.dataDelayMs);
          timers.add(timer);
        } else socket.write('502 5.5.2 not implemented\r\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  state.port = (server.address() as { port: number }).port;
  state.close = () =>
    new Promise<void>((resolve) => {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return state;
}

export interface SilentServer {
  port: number;
  /** connections accepted so far */
  connections(): number;
  close(): void;
}

/** A mail server that accepts connections and never says a word: a send to it stays under way until given up. */
export async function startSilentServer(): Promise<SilentServer> {
  const held: Socket[] = [];
  const { createServer } = await import('node:net');
  const server = createServer((socket) => held.push(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => held.length,
    close: () => {
      for (const s of held) s.destroy();
      server.close();
    },
  };
}
