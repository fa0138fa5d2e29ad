// Small hooks: the job store, the hash route, a request that loads with the component.
import { useEffect, useState } from 'preact/hooks';
import { api, ApiError, jobStore, type ErrorBody, type JobView } from './api.js';

export function useJobs(): JobView[] {
  const [, setTick] = useState(0);
  // The effect subscribes after the first paint: a job event that came between that render and the
  // subscription (a quick job finishing while its page mounts) would otherwise never show.
  const rendered = jobStore.version;
  useEffect(() => {
    const unsubscribe = jobStore.subscribe(() => setTick((t) => t + 1));
    if (jobStore.version !== rendered) setTick((t) => t + 1);
    return unsubscribe;
  }, []);
  return jobStore.list();
}

export function useJob(id: string | null | undefined): JobView | undefined {
  useJobs();
  return jobStore.get(id);
}

export interface Route {
  page: string;
  params: URLSearchParams;
}

function readRoute(): Route {
  const hash = location.hash.replace(/^#\/?/, '');
  const [page, q] = hash.split('?');
  return { page: page || 'vms', params: new URLSearchParams(q ?? '') };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(readRoute);
  useEffect(() => {
    const on = (): void => setRoute(readRoute());
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

export function go(page: string, params: Record<string, string> = {}): void {
  const q = new URLSearchParams(params).toString();
  location.hash = `#/${page}${q ? `?${q}` : ''}`;
}

export interface Loaded<T> {
  data: T | null;
  error: ApiError | null;
  loading: boolean;
  reload: () => void;
}

/** Runs `load` when `key` changes (and on reload()); the request is aborted if the component goes. */
export function useLoad<T>(key: string | null, load: (signal: AbortSignal) => Promise<T>): Loaded<T> {
  const [state, setState] = useState<{ data: T | null; error: ApiError | null; loading: boolean }>({ data: null, error: null, loading: key !== null });
  const [n, setN] = useState(0);
  useEffect(() => {
    if (key === null) return;
    const controller = new AbortController();
    setState((s) => ({ ...s, loading: true }));
    // A superseded request's answer (it came after the key changed) is dropped, whatever it is.
    load(controller.signal).then(
      (data) => {
        if (!controller.signal.aborted) setState({ data, error: null, loading: false });
      },
      (e: unknown) => {
        if (!controller.signal.aborted && (e as Error).name !== 'AbortError') setState({ data: null, error: e instanceof ApiError ? e : new ApiError({ code: 'INTERNAL', message: String(e) }, 0), loading: false });
      },
    );
    return () => controller.abort();
  }, [key, n]);
  return { ...state, reload: () => setN((x) => x + 1) };
}

export interface Post {
  error: ErrorBody | null;
  busy: boolean;
  /** Posts `body`; a job in the answer goes into the job store. Resolves to the answer, or null after a refusal (then in `error`). */
  post: <T>(path: string, body: object) => Promise<T | null>;
  clear: () => void;
}

/** A request a form or button makes, with the refusal kept to show beside it. */
export function usePost(): Post {
  const [error, setError] = useState<ErrorBody | null>(null);
  const [busy, setBusy] = useState(false);
  const post = async <T>(path: string, body: object): Promise<T | null> => {
    setBusy(true);
    setError(null);
    try {
      const answer = await api.post<T>(path, body);
      const job = (answer as { job?: JobView } | null)?.job;
      if (job) jobStore.put(job);
      return answer;
    } catch (e) {
      setError(e instanceof ApiError ? e.body : { code: 'INTERNAL', message: String(e) });
      return null;
    } finally {
      setBusy(false);
    }
  };
  return { error, busy, post, clear: () => setError(null) };
}
