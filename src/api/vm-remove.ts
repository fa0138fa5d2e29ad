/**
 * Remove-VMSnapshot whatever the VM's state (docs/vm-runtime.md): a running VM's worker removes the
 * checkpoint while the guest runs (runtime/live-remove.ts), a VM that is off gets the engine's
 * removal. Progress is polled from the worker; an abort asks the worker to cancel, and the call
 * then fails with ABORTED once the worker has settled (the tree reads correctly either way).
 */
import type { RemoveOptions, RemoveResult } from '../checkpoint/remove.js';
import { callControl } from '../runtime/control.js';
import type { LiveRemoveProgress } from '../runtime/live-remove.js';
import { liveWorker } from '../runtime/status.js';
import { withVm } from './vm.js';

export type { LiveRemoveProgress };

export interface RemoveVmResult extends RemoveResult {
  /** Whether the VM was running (its worker removed the checkpoint while the guest ran). */
  running: boolean;
}

/** How often a running removal's progress is asked for. */
const POLL_MS = 250;
/** A removal merges whole disks: the worker answers when it is done, however long that takes. */
const REMOVE_TIMEOUT_MS = 7 * 24 * 3600 * 1000;

export async function removeVm(folder: string, ref: string, options: RemoveOptions = {}): Promise<RemoveVmResult> {
  const live = await liveWorker(folder);
  if (!live) return { ...(await withVm(folder, { command: options.command ?? 'checkpoint remove' }, (vm) => vm.remove(ref, options))), running: false };
  options.signal?.throwIfAborted();
  const control = live.control;
  const cancel = (): void => void callControl(control, 'remove-cancel').catch(() => undefined);
  options.signal?.addEventListener('abort', cancel, { once: true });
  let polling = true;
  const poll = async (): Promise<void> => {
    while (polling) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      const p = (await callControl(control, 'remove-progress', {}, { timeoutMs: 10_000 }).catch(() => null)) as LiveRemoveProgress | null;
      if (polling && p && p.total > 0) options.onProgress?.(p.done, p.total);
    }
  };
  const poller = options.onProgress ? poll() : Promise.resolve();
  try {
    const r = (await callControl(control, 'remove', { checkpoint: ref, subtree: options.subtree ?? false }, { timeoutMs: REMOVE_TIMEOUT_MS })) as RemoveResult;
    return { ...r, running: true };
  } finally {
    polling = false;
    options.signal?.removeEventListener('abort', cancel);
    await poller;
  }
}
