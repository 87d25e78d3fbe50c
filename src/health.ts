/**
 * Readiness, for load balancers and orchestrators (`GET /ready`): the database answers and is still the file it was
 * opened from, every supervisor runs, and the server is not draining (SIGTERM received, listeners about to close).
 */
import type { ActorSystem } from './actors/system.js';
import type { StoreReads } from './store/reads.js';

interface ReadinessReport {
  ready: boolean;
  /** `ready`, `draining` or `not ready` */
  status: string;
  /** `ok`, or what is wrong (without paths: the answer is public) */
  database: string;
  /** supervisor → actor status */
  supervisors: Record<string, string>;
  /** which node answers (`[general] node_name`): several may run behind one load balancer */
  node: string;
}

export class Readiness {
  private draining = false;

  constructor(
    private readonly reads: StoreReads,
    private readonly system: ActorSystem,
    private readonly node: string,
  ) {}

  /** From now on the server reports itself not ready: called on SIGTERM, before the listeners close. */
  drain(): void {
    this.draining = true;
  }

  async report(): Promise<ReadinessReport> {
    const database = await this.reads.state();
    const supervisors = this.system.supervisorStatuses();
    const running = Object.values(supervisors).every((s) => s === 'active');
    const ready = !this.draining && database === 'ok' && running;
    const status = this.draining ? 'draining' : ready ? 'ready' : 'not ready';
    return { ready, status, database, supervisors, node: this.node };
  }
}
