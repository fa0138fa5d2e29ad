/**
 * Running VMs, as a library (docs/vm-runtime.md): start a VM's worker, ask it for its status, pause,
 * resume, save and stop it. Thin over `src/runtime`: the CLI and the console call these.
 */
import { spawn } from 'node:child_process';
import { mkdir, open, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { DiskchainError } from '../io/errors.js';
import { RUN_DIR } from '../checkpoint/folder.js';
import { callControl, errorFromJson } from '../runtime/control.js';
import { runPath } from '../runtime/run-record.js';
import { liveWorker, readVmStatus } from '../runtime/status.js';
import type { WorkerMessage } from '../runtime/worker-process.js';
import type { LiveApplyResult, LiveCheckpointResult } from '../runtime/live-checkpoint.js';
import type { CheckpointType } from '../checkpoint/manifest.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { withVm, type ApplyResult } from './vm.js';
import type { StopOptions, VmStatus } from '../runtime/worker.js';

export { runWorkerProcess, type WorkerProcessOptions } from '../runtime/worker-process.js';
export type { LiveApplyResult, LiveCheckpointResult } from '../runtime/live-checkpoint.js';
export type { StopOptions, VmStatus } from '../runtime/worker.js';
export type { VmState } from '../runtime/run-record.js';

export interface StartVmOptions {
  /**
   * How to run the worker: the script and arguments before the folder (default: this package's
   * runtime/worker-main.js). The CLI passes its own bundle and `vm worker`.
   */
  workerCommand?: string[];
  /** Until the guest runs (default 120 s); the worker is killed when it takes longer. */
  timeoutMs?: number;
  /** The worker's environment (default: this process's). */
  env?: NodeJS.ProcessEnv;
}

const DEFAULT_ENTRY = (): string => fileURLToPath(new URL('../runtime/worker-main.js', import.meta.url));

/** Off, Starting, Running, Paused, Paused-Critical, Saving, Saved, Stopping; with uptime, pids and why. */
export function vmStatus(folder: string): Promise<VmStatus> {
  return readVmStatus(folder);
}

/**
 * Starts the VM in a detached worker process (its output in <vm>/run/worker.log) and resolves once
 * the guest runs (resumed from its saved state when it has one). VM_STATE when it already runs.
 */
export async function startVm(folder: string, options: StartVmOptions = {}): Promise<VmStatus> {
  const before = await readVmStatus(folder);
  if (before.workerPid !== null && !before.stale) throw new DiskchainError('VM_STATE', `the VM is already ${before.state} (worker pid ${before.workerPid})`, { state: before.state });
  const real = before.folder;
  await mkdir(`${real}/${RUN_DIR}`, { recursive: true });
  const logPath = runPath(real, 'log');
  const log = await open(logPath, 'a');
  const logStart = (await log.stat()).size;
  const command = options.workerCommand ?? [DEFAULT_ENTRY()];
  const child = spawn(process.execPath, [...command, real], { detached: true, stdio: ['ignore', log.fd, log.fd, 'ipc'], env: options.env ?? process.env });
  await log.close();
  const timeoutMs = options.timeoutMs ?? 120_000;
  const outcome = await new Promise<WorkerMessage | { type: 'exit'; code: number | null; signal: string | null } | { type: 'timeout' }>((resolve) => {
    const timer = setTimeout(() => resolve({ type: 'timeout' }), timeoutMs);
    child.once('message', (m) => {
      clearTimeout(timer);
      resolve(m as WorkerMessage);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ type: 'exit', code, signal });
    });
    child.once('error', () => {
      clearTimeout(timer);
      resolve({ type: 'exit', code: null, signal: null });
    });
  });
  if (child.connected) child.disconnect();
  child.unref();
  if (outcome.type === 'ready') return outcome.status;
  if (outcome.type === 'error') throw errorFromJson(outcome.error);
  if (outcome.type === 'timeout') child.kill('SIGKILL');
  const tail = (await readFile(logPath, 'utf8').catch(() => '')).slice(logStart).trim().split('\n').slice(-10).join('\n');
  throw new DiskchainError('QEMU_FAILED', outcome.type === 'timeout' ? `the VM's worker did not start the guest within ${timeoutMs} ms` : `the VM's worker exited while starting${tail ? `: ${tail}` : ''}`, { file: logPath });
}

async function control(folder: string, op: string, args: Record<string, unknown>, timeoutMs: number): Promise<unknown> {
  const live = await liveWorker(folder);
  if (!live) {
    const s = await readVmStatus(folder);
    throw new DiskchainError('VM_STATE', `the VM is ${s.state}${s.stale ? ` (${s.stale})` : ''}: nothing to ${op}`, { state: s.state });
  }
  return callControl(live.control, op, args, { timeoutMs });
}

/** Shut down: the ACPI power button, a hard stop after `timeoutMs` (default 60 s); `force`: at once. */
export async function stopVm(folder: string, options: StopOptions = {}): Promise<VmStatus> {
  return (await control(folder, 'stop', { ...options }, (options.timeoutMs ?? 60_000) + 30_000)) as VmStatus;
}

/** Memory and device state saved into the VM folder; QEMU ends; the VM is Saved until started again. */
export async function saveVm(folder: string): Promise<VmStatus> {
  return (await control(folder, 'save', {}, 600_000)) as VmStatus;
}

export async function pauseVm(folder: string): Promise<VmStatus> {
  return (await control(folder, 'pause', {}, 60_000)) as VmStatus;
}

/** Resumes a Paused or Paused-Critical VM (after space was freed: QEMU retries the failed write). */
export async function resumeVm(folder: string): Promise<VmStatus> {
  return (await control(folder, 'resume', {}, 60_000)) as VmStatus;
}

export interface CheckpointVmResult extends LiveCheckpointResult {
  /** Whether the VM was running (a live checkpoint, with a pause) or not (the engine's offline checkpoint). */
  running: boolean;
}

/**
 * Checkpoint-VM whatever the VM's state: a running VM's worker takes it live (standard: with memory;
 * production: the guest's file systems frozen, no memory; the pause reported), a VM that is off gets
 * the engine's checkpoint of its disks.
 */
export async function checkpointVm(folder: string, options: { name?: string; type?: CheckpointType; signal?: AbortSignal } = {}): Promise<CheckpointVmResult> {
  const live = await liveWorker(folder);
  if (live) {
    const r = (await callControl(live.control, 'checkpoint', { ...(options.name ? { name: options.name } : {}), ...(options.type ? { type: options.type } : {}) }, { timeoutMs: 600_000 })) as LiveCheckpointResult;
    return { ...r, running: true };
  }
  const checkpoint = await withVm(folder, { command: 'checkpoint create' }, (vm) => vm.checkpoint({ ...options }));
  return { checkpoint, pauseMs: 0, frozen: null, frozenMs: null, stateBytes: null, fallback: null, phases: {}, running: false };
}

export type ApplyVmResult = ApplyResult & { checkpointFirstPauseMs: number | null; state: 'Running' | 'Saved' | 'Off' };

/**
 * Restore-VMSnapshot whatever the VM's state. Running: a standard checkpoint brings the guest back
 * running at the checkpoint's instant; a production one leaves the VM off. Not running: a standard
 * checkpoint leaves it Saved (vm start resumes it), a production one Off.
 */
export async function applyVm(folder: string, ref: string, options: { checkpointFirst?: boolean | string } & LongOperationOptions = {}): Promise<ApplyVmResult> {
  const live = await liveWorker(folder);
  if (live) {
    const r = (await callControl(live.control, 'apply', { checkpoint: ref, ...(options.checkpointFirst !== undefined ? { checkpointFirst: options.checkpointFirst } : {}) }, { timeoutMs: 600_000 })) as LiveApplyResult;
    const { checkpointFirst, state, ...rest } = r;
    return { ...rest, savedFirst: checkpointFirst?.checkpoint ?? rest.savedFirst, checkpointFirstPauseMs: checkpointFirst?.pauseMs ?? null, state };
  }
  const r = await withVm(folder, { command: 'checkpoint apply' }, (vm) => vm.apply(ref, options));
  const { saved, ...rest } = r;
  return { ...rest, checkpointFirstPauseMs: null, state: saved ? 'Saved' : 'Off' };
}
