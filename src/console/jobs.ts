// Long operations run as jobs that live in the server, not in the page: a reload re-attaches to them.
// A job goes running -> done | failed | cancelled, once. Listeners (the server-sent event streams) hear
// every change; progress is passed on at most every PROGRESS_MS per job, and always at the end.
// Two jobs whose locks overlap (the same path, or one inside the other) never run at once: the second
// is refused with LOCKED before it starts.
import { randomUUID } from 'node:crypto';
import { relative, isAbsolute } from 'node:path';
import { DiskchainError } from '../api/index.js';
import { errorBody, type ErrorBody } from './http-errors.js';

export type JobState = 'running' | 'done' | 'failed' | 'cancelled';

export interface JobView {
  id: string;
  kind: string;
  title: string;
  /** Paths (or VM folders) the job changes; the page shows a job's outcome next to them. */
  locks: string[];
  /** What the job belongs to, for the page (a scan's plan step, a VM, a checkpoint). */
  about: Record<string, string | number>;
  state: JobState;
  progress: { done: number; total: number } | null;
  phase: string | null;
  started: string;
  finished: string | null;
  result: unknown;
  error: ErrorBody | null;
}

export interface JobContext {
  id: string;
  signal: AbortSignal;
  onProgress: (done: number, total: number) => void;
  onPhase: (phase: string) => void;
}

export interface JobSpec {
  kind: string;
  title: string;
  locks: string[];
  about?: Record<string, string | number>;
  run: (ctx: JobContext) => Promise<unknown>;
}

const PROGRESS_MS = 100;
const KEEP_FINISHED = 200;

interface Job {
  view: JobView;
  controller: AbortController;
  settled: Promise<void>;
  lastSent: number;
  pending: ReturnType<typeof setTimeout> | null;
}

function overlaps(a: string, b: string): boolean {
  const ab = relative(a, b);
  const ba = relative(b, a);
  return ab === '' || (!ab.startsWith('..') && !isAbsolute(ab)) || (!ba.startsWith('..') && !isAbsolute(ba));
}

export class Jobs {
  private readonly jobs = new Map<string, Job>();
  private readonly listeners = new Set<(view: JobView) => void>();

  list(): JobView[] {
    return [...this.jobs.values()].map((j) => j.view);
  }

  get(id: string): JobView {
    const job = this.jobs.get(id);
    if (!job) throw new DiskchainError('NOT_FOUND', `no job ${id}`, { job: id });
    return job.view;
  }

  /** Calls `listener` with a job's view whenever it changes; returns the unsubscribe function. */
  subscribe(listener: (view: JobView) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** LOCKED when a running job holds one of `locks` (or a path inside or around one). */
  assertFree(locks: string[]): void {
    for (const other of this.jobs.values()) {
      if (other.view.state !== 'running') continue;
      const clash = locks.find((l) => other.view.locks.some((o) => overlaps(l, o)));
      if (clash !== undefined) {
        throw new DiskchainError('LOCKED', `${clash} is in use by the running job "${other.view.title}"; wait for it or cancel it`, { file: clash, job: other.view.id });
      }
    }
  }

  start(spec: JobSpec): JobView {
    this.assertFree(spec.locks);
    const controller = new AbortController();
    const view: JobView = {
      id: randomUUID(), kind: spec.kind, title: spec.title, locks: spec.locks, about: spec.about ?? {}, state: 'running', progress: null, phase: null,
      started: new Date().toISOString(), finished: null, result: null, error: null,
    };
    const job: Job = { view, controller, settled: Promise.resolve(), lastSent: 0, pending: null };
    this.jobs.set(view.id, job);
    const ctx: JobContext = {
      id: view.id,
      signal: controller.signal,
      onProgress: (done, total) => {
        if (view.state !== 'running') return;
        view.progress = { done, total };
        this.throttled(job);
      },
      onPhase: (phase) => {
        view.phase = phase;
        this.emit(job);
      },
    };
    job.settled = (async () => {
      try {
        view.result = (await spec.run(ctx)) ?? null;
        view.state = 'done';
      } catch (e) {
        view.error = errorBody(e).body.error;
        view.state = view.error.code === 'ABORTED' || controller.signal.aborted ? 'cancelled' : 'failed';
      }
      view.finished = new Date().toISOString();
      this.emit(job);
      this.prune();
    })();
    this.emit(job);
    return view;
  }

  cancel(id: string): JobView {
    const job = this.jobs.get(id);
    if (!job) throw new DiskchainError('NOT_FOUND', `no job ${id}`, { job: id });
    if (job.view.state === 'running') job.controller.abort();
    return job.view;
  }

  /** Resolves once the job has settled (tests and shutdown). */
  async settled(id: string): Promise<JobView> {
    const job = this.jobs.get(id);
    if (!job) throw new DiskchainError('NOT_FOUND', `no job ${id}`, { job: id });
    await job.settled;
    return job.view;
  }

  /** Cancels every running job and waits for all to settle: operations stop at a safe point. */
  async shutdown(): Promise<void> {
    for (const job of this.jobs.values()) if (job.view.state === 'running') job.controller.abort();
    await Promise.all([...this.jobs.values()].map((j) => j.settled));
  }

  private throttled(job: Job): void {
    const wait = job.lastSent + PROGRESS_MS - Date.now();
    if (wait <= 0) this.emit(job);
    else job.pending ??= setTimeout(() => this.emit(job), wait);
  }

  private emit(job: Job): void {
    if (job.pending) clearTimeout(job.pending);
    job.pending = null;
    job.lastSent = Date.now();
    for (const l of this.listeners) l(job.view);
  }

  private prune(): void {
    const finished = [...this.jobs.values()].filter((j) => j.view.state !== 'running');
    for (const j of finished.slice(0, Math.max(0, finished.length - KEEP_FINISHED))) this.jobs.delete(j.view.id);
  }
}
