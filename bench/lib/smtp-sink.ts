import type { AddressInfo } from 'node:net';
import { SMTPServer } from 'smtp-server';

export interface SmtpSink {
  host: string;
  port: number;
  /** messages fully received since the start (or the last reset) */
  count(): number;
  reset(): void;
  /**
   * Resolves once no message arrived for `quietMs` (default 300), or after `maxMs` (default 5000) whatever
   * happens: lets mails for requests still in flight land before counting.
   */
  settle(quietMs?: number, maxMs?: number): Promise<number>;
  close(): Promise<void>;
}

/** A loopback SMTP server accepting every message (no AUTH, no STARTTLS), discarding bodies, counting messages. */
export async function startSmtpSink(): Promise<SmtpSink> {
  let received = 0;
  let lastArrival = Date.now();
  const server = new SMTPServer({
    disabledCommands: ['AUTH', 'STARTTLS'],
    authOptional: true,
    logger: false,
    banner: 'sydent-ts bench sink',
    onData(stream, _session, callback) {
      stream.on('error', callback);
      stream.on('end', () => {
        received++;
        lastArrival = Date.now();
        callback();
      });
      stream.resume();
    },
  });
  server.on('error', (err) => process.stderr.write(`bench: smtp sink error: ${err.message}\n`));
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.server.address() as AddressInfo;
  let closing: Promise<void> | null = null;
  return {
    host: '127.0.0.1',
    port,
    count: () => received,
    reset: () => {
      received = 0;
    },
    async settle(quietMs = 300, maxMs = 5000) {
      const deadline = Date.now() + maxMs;
      while (Date.now() < deadline && Date.now() - lastArrival < quietMs) {
        await new Promise((r) => setTimeout(r, 50));
      }
      return received;
    },
    close: () => (closing ??= new Promise<void>((resolve) => server.close(() => resolve()))),
  };
}
