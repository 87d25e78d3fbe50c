/**
 * A worker thread and the calls in flight to it, for the modules that hand work to threads of their own (the mail
 * transport, the hash lookup pool, the signature verification pool).
 *
 * - The thread runs from source text, so it starts the same way from the TypeScript sources and from the bundle.
 * - Each call has an id, which its answer carries back; the owner reads its thread's messages and settles the calls.
 * - The thread keeps the process alive only while a call is in flight.
 * - When the thread fails or exits, every call in flight is refused with the error `failure` makes of how it ended,
 *   and `onDeath` is told, once: its owner starts another thread for the next call.
 */
import { Worker } from 'node:worker_threads';

/** How a thread ended: an error thrown in it and not caught, or its exit. */
export type ThreadEnd = { error: Error } | { exitCode: number };

interface Call<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
  /** run once the call is settled, whichever way */
  done: (() => void) | undefined;
}

export interface WorkerCallsOptions {
  workerData?: unknown;
  /** the error a call in flight is refused with when the thread has ended (made once per call) */
  failure(end: ThreadEnd): unknown;
  /** the thread has failed or exited (told once; not after `terminate`) */
  onDeath(): void;
}

export class WorkerCalls<T> {
  readonly worker: Worker;
  /** set once the thread has failed, exited or been terminated */
  dead = false;
  private readonly calls = new Map<number, Call<T>>();
  private nextId = 1;

  constructor(source: string, opts: WorkerCallsOptions) {
    this.worker = new Worker(source, { eval: true, workerData: opts.workerData });
    this.worker.unref();
    const end = (how: ThreadEnd): void => {
      if (this.dead) return;
      this.dead = true;
      opts.onDeath();
      this.failAll(() => opts.failure(how));
    };
    this.worker.on('error', (error) => end({ error }));
    this.worker.on('exit', (exitCode) => end({ exitCode }));
  }

  /** Calls in flight. */
  get size(): number {
    return this.calls.size;
  }

  /** A new call: its id, for the message that carries it, and its answer. `done` runs once it is settled. */
  start(done?: () => void): { id: number; answer: Promise<T> } {
    const id = this.nextId++;
    const answer = new Promise<T>((resolve, reject) => {
      this.calls.set(id, { resolve, reject, done });
    });
    this.worker.ref();
    return { id, answer };
  }

  /** Answers call `id` (false when it is not in flight: settled already, or refused). */
  resolve(id: number, value: T): boolean {
    const call = this.settle(id);
    call?.resolve(value);
    return call !== undefined;
  }

  /** Refuses call `id` (false when it is not in flight). */
  reject(id: number, error: unknown): boolean {
    const call = this.settle(id);
    call?.reject(error);
    return call !== undefined;
  }

  /** Refuses every call in flight, each with an error of its own from `error`. */
  failAll(error: () => unknown): void {
    const all = [...this.calls.values()];
    this.calls.clear();
    this.worker.unref();
    for (const call of all) {
      call.done?.();
      call.reject(error());
    }
  }

  /** Ends the thread, refusing the calls in flight with `error`; `onDeath` is not told. */
  terminate(error: () => unknown): Promise<number> {
    this.dead = true;
    this.failAll(error);
    return this.worker.terminate();
  }

  private settle(id: number): Call<T> | undefined {
    const call = this.calls.get(id);
    if (!call) return undefined;
    this.calls.delete(id);
    if (this.calls.size === 0) this.worker.unref();
    call.done?.();
    return call;
  }
}
