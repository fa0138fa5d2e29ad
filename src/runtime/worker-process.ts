/**
 * The worker as a process of its own: `diskchain vm start` in the foreground, or the detached
 * process `vm start --detach` (and the console) spawn. A detached worker tells its parent through
 * the IPC channel that the VM runs (`{type: "ready", status}`) or why it could not start
 * (`{type: "error", error}`), then lets go of it. SIGTERM and SIGINT shut the VM down (ACPI, then a
 * hard stop). The process ends when the VM is off or saved.
 */
import { setFileWriteMode } from '../io/file-source.js';
import { isDiskchainError } from '../io/errors.js';
import { registerGroupOperations } from './group-member.js';
import { registerGroupRemoveOperations } from './group-remove-member.js';
import { registerLiveOperations } from './live-checkpoint.js';
import { registerLiveRemove } from './live-remove.js';
import { VmWorker, type VmStatus } from './worker.js';

export type WorkerMessage = { type: 'ready'; status: VmStatus } | { type: 'error'; error: Record<string, unknown> };

export interface WorkerProcessOptions {
  onReady?: (status: VmStatus) => void;
  log?: (message: string) => void;
}

/** Runs the VM in this process until it is off or saved; resolves with its last status. */
export async function runWorkerProcess(folder: string, options: WorkerProcessOptions = {}): Promise<VmStatus> {
  // A worker serves a guest's disks: writes go through the thread pool so the event loop stays free.
  setFileWriteMode('thread-pool');
  let worker: VmWorker;
  try {
    worker = await VmWorker.start(folder, { log: options.log ?? ((m) => process.stderr.write(`${new Date().toISOString()} ${m}\n`)) });
  } catch (e) {
    const error = isDiskchainError(e) ? e.toJSON() : { name: 'Error', code: 'IO', message: e instanceof Error ? e.message : String(e) };
    sendToParent({ type: 'error', error });
    throw e;
  }
  registerLiveOperations(worker);
  registerLiveRemove(worker);
  registerGroupOperations(worker);
  registerGroupRemoveOperations(worker);
  const shutDown = (): void => {
    void worker.stop({ timeoutMs: 30_000 }).catch(() => worker.end('Off', 'stopped by a signal'));
  };
  process.on('SIGTERM', shutDown);
  process.on('SIGINT', shutDown);
  const status = worker.status();
  sendToParent({ type: 'ready', status });
  options.onReady?.(status);
  try {
    return await worker.ended;
  } finally {
    await worker.closeControl();
    process.off('SIGTERM', shutDown);
    process.off('SIGINT', shutDown);
  }
}

function sendToParent(message: WorkerMessage): void {
  if (!process.send || !process.connected) return;
  process.send(message, undefined, {}, () => {
    if (process.connected) process.disconnect();
  });
}
