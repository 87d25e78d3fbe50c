/**
 * Prometheus metrics (prom-client), one registry per running server so in-process tests do not share counts.
 * Gauges that mirror stored state (sessions by state, pending callbacks) are read from the store when scraped,
 * so they cost nothing on the request path.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client';
import type { StoreReads } from '../store/index.js';
import { VERSION } from '../version.js';
import { sydentMethod, sydentServlet } from './sydent-servlets.js';

/** sydent_http_request_duration_seconds's buckets */
const HTTP_DURATION_BUCKETS: readonly number[] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/**
 * The requests of one route and method, counted in plain numbers on the request path: a prom-client `inc` or
 * `observe` builds and hashes a label string and validates the labels on every call, which a route answering
 * thousands of requests a second should not pay. prom-client reads these when it is scraped.
 */
export class HttpRouteMetrics {
  /** answers by status code since the last scrape (handed to the counter then) */
  readonly pendingByStatus = new Map<number, number>();
  /** observations per bucket (not cumulative; the last slot is above the largest bound) */
  readonly buckets: Float64Array;
  sum = 0;
  count = 0;
  /** Sydent's servlet class for this route (null: a route Sydent does not have) */
  readonly servlet: string | null;

  constructor(
    readonly route: string,
    readonly method: string,
    private readonly bounds: readonly number[] = HTTP_DURATION_BUCKETS,
  ) {
    this.buckets = new Float64Array(bounds.length + 1);
    this.servlet = sydentServlet(route);
  }

  /** One answered request: its status code and how long it took, in seconds. */
  record(status: number, seconds: number): void {
    this.pendingByStatus.set(status, (this.pendingByStatus.get(status) ?? 0) + 1);
    this.sum += seconds;
    this.count++;
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && seconds > bounds[i]!) i++;
    this.buckets[i]!++;
  }

  reset(): void {
    this.pendingByStatus.clear();
    this.buckets.fill(0);
    this.sum = 0;
    this.count = 0;
  }
}

/**
 * sydent_http_request_duration_seconds, exported from the routes' HttpRouteMetrics exactly as a prom-client
 * Histogram with labels (route, method) and these buckets would export it: one series per label set observed.
 */
class HttpDurationHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly routes: Map<string, HttpRouteMetrics>,
    private readonly bounds: readonly number[] = HTTP_DURATION_BUCKETS,
  ) {}

  async get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: Array<{ value: number; labels: Record<string, string | number>; metricName: string }>;
  }> {
    const values: Array<{ value: number; labels: Record<string, string | number>; metricName: string }> = [];
    for (const m of this.routes.values()) {
      if (m.count === 0) continue;
      let acc = 0;
      this.bounds.forEach((le, i) => {
        acc += m.buckets[i]!;
        values.push({
          metricName: `${this.name}_bucket`,
          labels: { le, route: m.route, method: m.method },
          value: acc,
        });
      });
      values.push(
        { metricName: `${this.name}_bucket`, labels: { le: '+Inf', route: m.route, method: m.method }, value: m.count },
        { metricName: `${this.name}_sum`, labels: { route: m.route, method: m.method }, value: m.sum },
        { metricName: `${this.name}_count`, labels: { route: m.route, method: m.method }, value: m.count },
      );
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    for (const m of this.routes.values()) m.reset();
  }
}

type MetricValue = { value: number; labels: Record<string, string | number>; metricName?: string };

/**
 * Sydent's `sydent_http_received_requests_total{servlet, method}`, read from the routes' HttpRouteMetrics (their
 * answered requests, which Sydent counted as they arrived) with Sydent's label values (sydent-servlets.ts).
 */
class SydentReceivedRequests {
  readonly type = 'counter';
  readonly aggregator = 'sum';
  readonly name = 'sydent_http_received_requests_total';
  readonly help = "Received requests (Sydent's counter: servlet class and method as Sydent labelled them)";

  constructor(private readonly routes: Map<string, HttpRouteMetrics>) {}

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: MetricValue[] }> {
    const counts = new Map<string, MetricValue>();
    for (const m of this.routes.values()) {
      if (m.servlet === null || m.count === 0) continue;
      const key = `${m.servlet} ${m.method}`;
      const entry = counts.get(key);
      if (entry) entry.value += m.count;
      else counts.set(key, { labels: { servlet: m.servlet, method: sydentMethod(m.method) }, value: m.count });
    }
    return {
      name: this.name,
      help: this.help,
      type: this.type,
      aggregator: this.aggregator,
      values: [...counts.values()],
    };
  }

  reset(): void {}
}

export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  readonly httpDuration: HttpDurationHistogram;
  /** by `${method} ${route}` */
  private readonly httpRoutes = new Map<string, HttpRouteMetrics>();
  readonly transitions: Counter<'machine' | 'from' | 'to'>;
  readonly smsSent: Counter<'provider'>;
  readonly smsFailed: Counter<'provider'>;
  /** the name Sydent counted its mails under (it counted attempts; we count mails the SMTP server accepted) */
  readonly emailsSent: Counter;
  readonly emailsFailed: Counter;

  /** `reads`: the store's read facade, for the gauges of what the database holds (or later, `watchStore`). */
  constructor(reads?: StoreReads) {
    // Unprefixed, as Sydent's prometheus_client exported them: process_cpu_seconds_total, process_resident_memory_bytes…
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'sydent_build_info',
      help: 'Always 1; the running version as a label',
      labelNames: ['version'],
      registers: [this.registry],
    }).set({ version: VERSION }, 1);
    const httpRoutes = this.httpRoutes;
    this.httpRequests = new Counter({
      name: 'sydent_http_requests_total',
      help: 'HTTP requests answered, by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers: [this.registry],
      // the answers counted since the last scrape, one inc per label set
      collect() {
        for (const m of httpRoutes.values()) {
          for (const [status, n] of m.pendingByStatus) {
            this.inc({ route: m.route, method: m.method, status: String(status) }, n);
          }
          m.pendingByStatus.clear();
        }
      },
    });
    this.httpDuration = new HttpDurationHistogram(
      'sydent_http_request_duration_seconds',
      'Time to answer an HTTP request, by route and method',
      httpRoutes,
    );
    this.registry.registerMetric(this.httpDuration as unknown as Metric);
    this.registry.registerMetric(new SydentReceivedRequests(httpRoutes) as unknown as Metric);
    this.transitions = new Counter({
      name: 'sydent_machine_transitions_total',
      help: 'State machine transitions, by machine and states',
      labelNames: ['machine', 'from', 'to'],
      registers: [this.registry],
    });
    this.smsSent = new Counter({
      name: 'sydent_sms_sent_total',
      help: 'SMS the provider accepted',
      labelNames: ['provider'],
      registers: [this.registry],
    });
    this.smsFailed = new Counter({
      name: 'sydent_sms_failed_total',
      help: 'SMS the provider did not accept',
      labelNames: ['provider'],
      registers: [this.registry],
    });
    this.emailsSent = new Counter({
      name: 'sydent_emails_sent_total',
      help: 'Emails the SMTP server accepted',
      registers: [this.registry],
    });
    this.emailsFailed = new Counter({
      name: 'sydent_emails_failed_total',
      help: 'Emails given up on (refused, or still failing after the retries)',
      registers: [this.registry],
    });
    if (reads) this.watchStore(reads);
  }

  /** The gauges read from the database at scrape time (the store is opened after the metrics are made). */
  watchStore(reads: StoreReads): void {
    new Gauge({
      name: 'sydent_sessions',
      help: 'Validation sessions in the database, by state',
      labelNames: ['state'],
      registers: [this.registry],
      async collect() {
        const byState = await reads.sessions.countByState();
        this.reset();
        for (const [state, n] of Object.entries(byState)) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'sydent_callbacks_pending',
      help: 'Homeserver callbacks not yet delivered',
      registers: [this.registry],
      async collect() {
        this.set(await reads.callbacks.pendingCount());
      },
    });
  }

  /**
   * Where the requests of a route (its pattern, never the URL) and method are counted: the same object for the
   * same pair, so callers may keep it.
   */
  httpRoute(route: string, method: string): HttpRouteMetrics {
    const key = `${method} ${route}`;
    let m = this.httpRoutes.get(key);
    if (!m) this.httpRoutes.set(key, (m = new HttpRouteMetrics(route, method)));
    return m;
  }

  /** Adds a gauge computed at scrape time (SMS counts, replication backlog per peer...). */
  gauge(
    name: string,
    help: string,
    labelNames: string[],
    read: () => Record<string, number> | number | Promise<Record<string, number> | number>,
  ): void {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      async collect() {
        const value = await read();
        this.reset();
        if (typeof value === 'number') this.set(value);
        else for (const [label, n] of Object.entries(value)) this.set({ [labelNames[0] ?? 'label']: label }, n);
      },
    });
  }
}
