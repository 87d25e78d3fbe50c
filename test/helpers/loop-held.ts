/**
 * How long this test's own event loop was held up within a span of time: busy with its own work (hundreds of
 * trickling sockets), or not given a core on a loaded machine. What happens meanwhile elsewhere (a server's answer,
 * a process's exit) is seen here that much later than it came. A server that keeps a client waiting holds up nothing
 * here (this loop idles while it waits), so a duration less what this tells is the server's own: an upper bound on
 * that stays as strict as on an idle machine.
 *
 * `now` is the clock the test reads its times with (performance.now or Date.now); `within` takes two of its readings.
 */
export interface LoopHeld {
  within(from: number, to: number): number;
  stop(): void;
}

export function loopHeld(now: () => number = () => performance.now()): LoopHeld {
  const TICK = 10;
  const held: Array<[from: number, to: number]> = [];
  let last = now();
  const timer = setInterval(() => {
    const at = now();
    if (at - last > TICK) held.push([last + TICK, at]);
    last = at;
  }, TICK);
  return {
    within: (from, to) => held.reduce((sum, [a, b]) => sum + Math.max(0, Math.min(b, to) - Math.max(a, from)), 0),
    stop: () => clearInterval(timer),
  };
}
