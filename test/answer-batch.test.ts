/**
 * AnswerBatch (src/http/answer-batch.ts) on a loopback HTTP server: answers queued in one turn are written at its
 * end, in order, each to its own connection; one that cannot be written drops its connection only; work that takes
 * long holds no other answer.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { AnswerBatch } from '../src/http/answer-batch.js';

let server: http.Server | undefined;
afterEach(async () => {
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** A server that holds requests until `count` have arrived, then answers them all in one turn via `answer`. */
async function holdingServer(
  count: number,
  answer: (held: Array<{ req: http.IncomingMessage; res: http.ServerResponse }>) => void,
): Promise<string> {
  const held: Array<{ req: http.IncomingMessage; res: http.ServerResponse }> = [];
  server = http.createServer((req, res) => {
    req.resume();
    held.push({ req, res });
    if (held.length === count) answer(held.splice(0));
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function get(base: string, id: number): Promise<{ status: number; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = http.get(`${base}/?id=${id}`, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ error: err.code ?? err.message }));
  });
}

const idOf = (req: http.IncomingMessage) => Number(new URL(req.url ?? '/', 'http://x').searchParams.get('id'));

describe('AnswerBatch', () => {
  it('writes the answers queued in a turn after it, in order, each to its own connection', async () => {
    const batch = new AnswerBatch();
    const queued: number[] = [];
    const written: number[] = [];
    let writtenBeforeTurnEnded = -1;
    const base = await holdingServer(5, (held) => {
      for (const { req, res } of held) {
        const body = JSON.stringify({ id: idOf(req) });
        queued.push(idOf(req));
        batch.add(
          res,
          200,
          ['content-type', 'application/json', 'content-length', String(body.length)],
          body,
          (error) => {
            expect(error).toBeUndefined();
            written.push(idOf(req));
          },
        );
      }
      // Nothing is written while the turn that queued them runs.
      writtenBeforeTurnEnded = held.filter(({ res }) => res.headersSent).length;
    });
    const answers = await Promise.all([1, 2, 3, 4, 5].map((id) => get(base, id)));
    expect(answers).toEqual([1, 2, 3, 4, 5].map((id) => ({ status: 200, body: JSON.stringify({ id }) })));
    expect(writtenBeforeTurnEnded).toBe(0);
    expect(written).toEqual(queued);
    expect([...queued].sort()).toEqual([1, 2, 3, 4, 5]);
  });

  it('work put off with beforeWrite runs after the turn, before its writes; what it adds is written with them', async () => {
    const batch = new AnswerBatch();
    const seen: Array<{ turnOver: boolean; firstWritten: boolean }> = [];
    const base = await holdingServer(2, (held) => {
      const [first, second] = held as [(typeof held)[0], (typeof held)[0]];
      let turnOver = false;
      batch.add(first.res, 200, ['content-length', '5'], 'first', () => {});
      batch.beforeWrite(() => {
        seen.push({ turnOver, firstWritten: first.res.headersSent });
        batch.add(second.res, 200, ['content-length', '6'], 'second', () => {});
      });
      turnOver = true;
    });
    const answers = await Promise.all([1, 2].map((id) => get(base, id)));
    expect(answers.map((a) => ('body' in a ? a.body : a.error)).sort()).toEqual(['first', 'second']);
    expect(seen).toEqual([{ turnOver: true, firstWritten: false }]);
  });

  it('work still running after the next turn holds no other answer; its own is written when it comes', async () => {
    const batch = new AnswerBatch();
    let finish!: () => void;
    const slowDone = new Promise<void>((resolve) => (finish = resolve));
    const base = await holdingServer(2, (held) => {
      const [slow, fast] = held as [(typeof held)[0], (typeof held)[0]];
      // A requestToken that sends a mail: its answer waits for the SMTP server.
      batch.beforeWrite(async () => {
        await slowDone;
        batch.add(slow.res, 200, ['content-length', '4'], 'slow', () => {});
      });
      // A repeat answered from a settled read.
      batch.beforeWrite(async () => {
        await Promise.resolve();
        batch.add(fast.res, 200, ['content-length', '4'], 'fast', () => {});
      });
    });
    const answers = [get(base, 1), get(base, 2)];
    const fast = await Promise.race([answers[1]!, new Promise((resolve) => setTimeout(() => resolve('held'), 2000))]);
    expect(fast).toEqual({ status: 200, body: 'fast' });
    finish();
    expect(await answers[0]).toEqual({ status: 200, body: 'slow' });
  });

  it('an answer that cannot be written drops its own connection; the rest of the batch is written', async () => {
    const batch = new AnswerBatch();
    const errors: unknown[] = [];
    const base = await holdingServer(3, (held) => {
      for (const { req, res } of held) {
        const id = idOf(req);
        // A header value with a line break: writeHead refuses it.
        const headers = id === 2 ? ['x-bad', 'a\r\nb'] : ['content-length', '2'];
        batch.add(res, 200, headers, 'ok', (error) => {
          if (error) errors.push(error);
        });
      }
    });
    const answers = await Promise.all([1, 2, 3].map((id) => get(base, id)));
    expect(answers[0]).toEqual({ status: 200, body: 'ok' });
    expect(answers[1]).toEqual({ error: 'ECONNRESET' });
    expect(answers[2]).toEqual({ status: 200, body: 'ok' });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatchObject({ code: 'ERR_INVALID_CHAR' });
  });
});
