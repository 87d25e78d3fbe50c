/**
 * Answers written together at the end of the event loop's turn, rather than each as soon as it is ready.
 *
 * Why: under load one turn of the loop reads the requests of many connections. A client waiting for several answers
 * sleeps until the first arrives; waking a sleeping process on another CPU is, on a virtual machine, an interrupt
 * across CPUs that costs the writer kernel time, the largest single cost of a one-hash lookup under load (perf: `_raw_spin_unlock_irqrestore` under `sock_def_readable`). Written one after another, the
 * answers after the first find the client awake and cost no further wake-up. When a turn reads a single request
 * nothing waits: its answer is written right after the turn's reads (`setImmediate` runs after the poll phase).
 * The measurements behind this are in bench/README.md ("Code shaped by measurements").
 * Answers of one connection keep their order (pipelined requests): the queue is first in, first out.
 *
 * Work can also be put off to the same moment (`beforeWrite`): a request read in this turn can be answered then,
 * when its body has arrived, and its answer is written with the others. Work that answers a promise (a read through
 * the store's asynchronous read facade) is waited for, until the next turn's end at most: the SQLite engine's reads
 * are settled before the event loop moves on, so those answers still leave together in this turn; longer work (a
 * lookup the lookup workers share, a requestToken that sends a mail) holds nobody's answer but its own.
 */
import type { ServerResponse } from 'node:http';

/** What is done with an answer once it is written (logging, metrics), or why writing it failed. */
type AfterWrite = (error?: unknown) => void;

interface Pending {
  res: ServerResponse;
  status: number;
  headers: string[];
  body: string | Buffer;
  after: AfterWrite;
}

export class AnswerBatch {
  private queue: Pending[] = [];
  private work: Array<() => void | Promise<void>> = [];
  private scheduled = false;
  private readonly flush = (): void => this.runWork();

  /** Queues an answer: `headers` flat (name, value, …) as `writeHead` takes them; `after` runs once it is written. */
  add(res: ServerResponse, status: number, headers: string[], body: string | Buffer, after: AfterWrite): void {
    this.queue.push({ res, status, headers, body, after });
    this.schedule();
  }

  /**
   * Runs `fn` at the end of this turn, before this turn's answers are written; answers it adds (once its promise
   * settles, if it returns one) are written with them. It must not throw or reject (it answers its own errors).
   */
  beforeWrite(fn: () => void | Promise<void>): void {
    this.work.push(fn);
    this.schedule();
  }

  private schedule(): void {
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(this.flush);
    }
  }

  private runWork(): void {
    const work = this.work;
    this.work = [];
    // The work still running (a promise that has not settled): the answers are written when the last one settles,
    // or at the next turn's end if some has not by then (a requestToken that sends a mail): answers already made are
    // not held behind it, and its own answer is written when it comes, with whatever is queued then.
    let running = 1;
    let open = true;
    const write = (): void => {
      if (!open) return;
      open = false;
      this.writeAll();
    };
    const settled = (): void => {
      if (--running === 0) write();
    };
    for (const fn of work) {
      const result = fn();
      if (result) {
        running++;
        result.then(settled, settled);
      }
    }
    settled();
    if (open) setImmediate(write);
  }

  private writeAll(): void {
    const queue = this.queue;
    this.queue = [];
    this.scheduled = false;
    for (const answer of queue) {
      try {
        answer.res.writeHead(answer.status, answer.headers);
        answer.res.end(answer.body);
      } catch (error) {
        // Only a header Node refuses gets here (the lane's are constants and numbers): that connection is dropped,
        // the rest of the batch is still written.
        answer.res.destroy();
        answer.after(error);
        continue;
      }
      answer.after();
    }
    // Work put off while this batch's work was awaited: the next turn's.
    if (this.work.length > 0) this.schedule();
  }
}
