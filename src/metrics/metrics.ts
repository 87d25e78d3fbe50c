/**
 * Prometheus metrics (prom-client), one registry per running server so in-process tests do not share counts.
 * Gauges that mirror stored state (sessions by state, pending callbacks) are read from the store when scraped,
 * so they cost nothing on the request path.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { mailCounters } from '../mail/sender.js';
import type { StoreReads } from '../store/index.js';

export class Metrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'route' | 'method' | 'status'>;
  readonly httpDuration: Histogram<'route' | 'method'>;
  readonly transitions: Counter<'machine' | 'from' | 'to'>;
  readonly smsSent: Counter<'provider'>;
  readonly smsFailed: Counter<'provider'>;

  constructor(reads: StoreReads) {
    collectDefaultMetrics({ register: this.registry, prefix: 'sydent_' });
    this.httpRequests = new Counter({
      name: 'sydent_http_requests_total',
      help: 'HTTP requests answered, by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers: [this.registry],
    });
    this.httpDuration = new Histogram({
      name: 'sydent_http_request_duration_seconds',
      help: 'Time to answer an HTTP request, by route and method',
      labelNames: ['route', 'method'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [this.registry],
    });
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
    new Gauge({
      name: 'sydent_sessions',
      help: 'Validation sessions in the database, by state',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [state, n] of Object.entries(reads.sessions.countByState())) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'sydent_callbacks_pending',
      help: 'Homeserver callbacks not yet delivered',
      registers: [this.registry],
      collect() {
        this.set(reads.callbacks.pendingCount());
      },
    });
    new Gauge({
      name: 'sydent_emails_sent',
      help: 'Emails the SMTP server accepted (since start)',
      registers: [this.registry],
      collect() {
        this.set(mailCounters.sent);
      },
    });
    new Gauge({
      name: 'sydent_emails_failed',
      help: 'Emails that could not be delivered to the SMTP server (since start)',
      registers: [this.registry],
      collect() {
        this.set(mailCounters.failed);
      },
    });
  }

  /** Adds a gauge computed at scrape time (SMS counts, replication backlog per peer...). */
  gauge(name: string, help: string, labelNames: string[], read: () => Record<string, number> | number): void {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        const value = read();
        this.reset();
        if (typeof value === 'number') this.set(value);
        else for (const [label, n] of Object.entries(value)) this.set({ [labelNames[0] ?? 'label']: label }, n);
      },
    });
  }
}
