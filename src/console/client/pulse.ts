// Changes made outside this page (a VM started or stopped from the CLI, paused by QEMU on a full disk,
// a worker that died, a checkpoint taken elsewhere): the page polls the server's cheap status route
// while it is visible and reloads its full view when what it shows no longer matches.
import { useEffect, useRef } from 'preact/hooks';
import type { VmPulse } from '../routes-vms.js';
import type { VmStatus } from '../../api/index.js';
import { api, ApiError, query } from './api.js';
import { bytes } from './format.js';

/** How often a visible page asks: often enough to follow a start or a stop, rare enough to cost nothing. */
export const PULSE_MS = 2000;

type Shown = Pick<VmPulse, 'folder' | 'state' | 'runtime' | 'checkpoints' | 'nowParent'>;

/** What a page shows of a VM, as one string: the fields that change without a job of this console (not the uptime). */
export function fingerprint(vms: Shown[]): string {
  return vms
    .map((v) => {
      const r = v.runtime;
      return [v.folder, v.state, v.checkpoints, v.nowParent, r?.state, r?.workerPid, r?.busy, r?.stale, r?.reason, r?.saved?.created, r?.critical?.reason, r?.warnings.join(';'), lowSpaceShown(r?.lowSpace)].join('|');
    })
    .sort()
    .join('\n');
}

/** The low-space warning as the page shows it (a change of free space too small to show is no change). */
function lowSpaceShown(low: VmStatus['lowSpace'] | undefined): string {
  return low ? `${bytes(low.free)}<${bytes(low.reserve)}` : '';
}

/**
 * Polls /api/vms/status (one VM with `path`) every PULSE_MS while the page is visible; when its
 * fingerprint differs from `shown` (the loaded view's), calls `reload` once for that difference.
 */
export function usePulse(path: string | null, shown: string | null, reload: () => void): void {
  const latest = useRef({ shown, reload, asked: { pulse: '', shown: '' } });
  latest.current.shown = shown;
  latest.current.reload = reload;
  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let controller: AbortController | undefined;
    const tick = async (): Promise<void> => {
      timer = undefined;
      if (document.visibilityState === 'visible' && latest.current.shown !== null) {
        controller = new AbortController();
        let now: string | null;
        try {
          const { vms } = await api.get<{ vms: VmPulse[] }>(query('/api/vms/status', { path: path ?? undefined }), controller.signal);
          now = fingerprint(vms);
        } catch (e) {
          // A refusal from the server (the VM folder is gone: NOT_FOUND) is a change too: the reload shows
          // the error where the page was. No answer at all (the server stopped) leaves the page as it is.
          now = e instanceof ApiError && e.status !== 0 ? `error ${e.body.code}` : null;
        }
        const l = latest.current;
        // Reload once per difference: the same view against the same status is not asked again.
        if (!stopped && now !== null && l.shown !== null && now !== l.shown && !(l.asked.pulse === now && l.asked.shown === l.shown)) {
          l.asked = { pulse: now, shown: l.shown };
          l.reload();
        }
      }
      if (!stopped) timer = setTimeout(() => void tick(), PULSE_MS);
    };
    const onVisible = (): void => {
      if (document.visibilityState === 'visible' && timer !== undefined) {
        clearTimeout(timer);
        void tick();
      }
    };
    timer = setTimeout(() => void tick(), PULSE_MS);
    document.addEventListener('visibilitychange', onVisible);
    return () => {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      controller?.abort();
      document.removeEventListener('visibilitychange', onVisible);
    };
  }, [path]);
}
