/**
 * migrate-db's progress line on stderr: rows copied of the total, rows per second and the time left. On a terminal
 * one line redrawn in place; otherwise (a log, a pipe) a line every few seconds.
 */
export interface ProgressOptions {
  write: (text: string) => void;
  /** redraw one line in place (stderr is a terminal) */
  tty: boolean;
  /** rows in all, and rows already copied by an earlier, interrupted run */
  total: number;
  already: number;
  now?: () => number;
  /** between lines when not on a terminal, ms */
  everyMs?: number;
}

export class Progress {
  private readonly started: number;
  private done: number;
  private copiedNow = 0;
  private lastDraw = -Infinity;
  private drawn = false;
  private readonly now: () => number;

  constructor(private readonly opts: ProgressOptions) {
    this.now = opts.now ?? (() => performance.now());
    this.started = this.now();
    this.done = opts.already;
  }

  /** `rows` more copied, of `table` */
  add(rows: number, table: string): void {
    this.done += rows;
    this.copiedNow += rows;
    const t = this.now();
    if (t - this.lastDraw >= (this.opts.tty ? 200 : (this.opts.everyMs ?? 2000))) {
      this.lastDraw = t;
      this.draw(table);
    }
  }

  /** rows per second in this run */
  rate(): number {
    const s = (this.now() - this.started) / 1000;
    return s > 0 ? this.copiedNow / s : 0;
  }

  line(table: string): string {
    const { total } = this.opts;
    const pct = total > 0 ? Math.floor((this.done / total) * 100) : 100;
    const rate = this.rate();
    const left = total - this.done;
    // A rate measured over less than a second (a first, tiny table) says nothing of the hours ahead.
    const eta = rate > 0 && this.now() - this.started >= 1000 ? `, ETA ${formatSeconds(left / rate)}` : '';
    return `copying ${table}: ${fmt(this.done)}/${fmt(total)} rows (${pct}%), ${fmt(Math.round(rate))} rows/s${eta}`;
  }

  private draw(table: string): void {
    if (this.opts.tty) {
      this.opts.write(`\r\x1b[K${this.line(table)}`);
      this.drawn = true;
    } else {
      this.opts.write(`${this.line(table)}\n`);
    }
  }

  /** A message on its own line (ends the redrawn line first). */
  say(text: string): void {
    if (this.drawn) this.opts.write('\n');
    this.drawn = false;
    this.opts.write(`${text}\n`);
  }

  /** The final figures: rows copied in this run, seconds, rows/s. */
  summary(): string {
    const s = (this.now() - this.started) / 1000;
    return `${fmt(this.copiedNow)} rows copied in ${s.toFixed(1)} s (${fmt(Math.round(this.rate()))} rows/s)`;
  }
}

const fmt = (n: number) => n.toLocaleString('en');

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${Math.ceil(s)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.ceil(s - m * 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}
