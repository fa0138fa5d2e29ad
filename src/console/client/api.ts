// Talking to the console's server: the token from the page in a header on every request, errors as
// ApiError with the engine's code, and the job stream (server-sent events) as a store components read.
import type { ErrorBody } from '../http-errors.js';
import type { JobView } from '../jobs.js';

export type { ErrorBody, JobView };

const token = document.querySelector<HTMLMetaElement>('meta[name="diskchain-token"]')?.content ?? '';

export class ApiError extends Error {
  constructor(readonly body: ErrorBody, readonly status: number) {
    super(body.message);
  }
}

async function call<T>(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers: { 'x-diskchain-token': token, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      ...(signal ? { signal } : {}),
    });
  } catch (e) {
    if ((e as Error).name === 'AbortError') throw e;
    throw new ApiError({ code: 'IO', message: 'the console server does not answer (stopped?)' }, 0);
  }
  // An abort while the body streams rejects here too: it must stay an abort, not become an empty answer
  // (a page whose reload was superseded would otherwise show nothing and lose its forms' state).
  const data = (await res.json().catch((e: unknown) => {
    if ((e as Error).name === 'AbortError') throw e;
    return null;
  })) as { error?: ErrorBody } | null;
  if (!res.ok) throw new ApiError(data?.error ?? { code: 'INTERNAL', message: `HTTP ${res.status}` }, res.status);
  return data as T;
}

export const api = {
  get: <T>(path: string, signal?: AbortSignal): Promise<T> => call<T>('GET', path, undefined, signal),
  post: <T>(path: string, body: unknown = {}): Promise<T> => call<T>('POST', path, body),
};

export function query(path: string, params: Record<string, string | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/** The jobs the server holds, kept current by the event stream (reconnects by itself). */
class JobStore {
  private jobs = new Map<string, JobView>();
  private listeners = new Set<() => void>();
  connected = false;
  /** Counts changes: a component that rendered at one version and subscribes later sees whether it missed one. */
  version = 0;

  constructor() {
    const source = new EventSource('/api/events');
    source.addEventListener('jobs', (e) => {
      this.jobs = new Map((JSON.parse((e as MessageEvent<string>).data) as JobView[]).map((j) => [j.id, j]));
      this.connected = true;
      this.changed();
    });
    source.addEventListener('job', (e) => {
      const job = JSON.parse((e as MessageEvent<string>).data) as JobView;
      this.jobs.set(job.id, job);
      this.changed();
    });
    source.addEventListener('error', () => {
      this.connected = false;
      this.changed();
    });
  }

  /** Newest first. */
  list(): JobView[] {
    return [...this.jobs.values()].sort((a, b) => (a.started < b.started ? 1 : -1));
  }

  get(id: string | null | undefined): JobView | undefined {
    return id ? this.jobs.get(id) : undefined;
  }

  /** Puts a job the server just returned (the stream may not have carried it yet). */
  put(job: JobView): void {
    if (!this.jobs.has(job.id)) {
      this.jobs.set(job.id, job);
      this.changed();
    }
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    this.version++;
    for (const l of this.listeners) l();
  }
}

export const jobStore = new JobStore();

export async function cancelJob(id: string): Promise<void> {
  const { job } = await api.post<{ job: JobView }>(`/api/jobs/${encodeURIComponent(id)}/cancel`);
  jobStore.put(job);
}
