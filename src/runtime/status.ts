/**
 * A VM's status from outside its worker (`vm status`, the console): the live answer of the worker's
 * control socket when a worker runs; otherwise what the folder says (Saved when Now has a valid
 * saved state, else Off), with what the last run recorded. A run record that says the VM runs while
 * its worker's pid is gone is a stale run/: the worker died, and the status says so.
 */
import { realpath } from 'node:fs/promises';
import { resolve } from 'node:path';
import { DiskchainError, isDiskchainError } from '../io/errors.js';
import { readManifest } from '../checkpoint/folder.js';
import { readSavedState } from '../checkpoint/saved-state.js';
import { callControl } from './control.js';
import { processAlive, readRunRecord, runPath } from './run-record.js';
import type { VmStatus } from './worker.js';

/** The live worker's control socket, or undefined when no worker runs the VM. */
export async function liveWorker(folder: string): Promise<{ real: string; control: string } | undefined> {
  const real = await realFolder(folder);
  const record = await readRunRecord(real);
  if (!record || record.state === 'Off' || record.state === 'Saved' || !processAlive(record.pid)) return undefined;
  return { real, control: runPath(real, 'control') };
}

async function realFolder(folder: string): Promise<string> {
  const abs = resolve(folder);
  return realpath(abs).catch(() => {
    throw new DiskchainError('NOT_FOUND', `no VM folder at ${abs}`, { file: abs });
  });
}

export async function readVmStatus(folder: string): Promise<VmStatus> {
  const real = await realFolder(folder);
  const m = await readManifest(real);
  const record = await readRunRecord(real);
  const base: VmStatus = {
    folder: resolve(folder),
    id: m.id,
    name: m.name,
    state: 'Off',
    reason: null,
    workerPid: null,
    qemuPid: null,
    started: null,
    uptimeMs: null,
    accel: null,
    machine: null,
    busy: null,
    critical: null,
    warnings: [],
    lowSpace: null,
    saved: null,
    stale: null,
  };
  if (record && record.state !== 'Off' && record.state !== 'Saved') {
    if (processAlive(record.pid)) {
      try {
        return (await callControl(runPath(real, 'control'), 'status', {}, { timeoutMs: 10_000 })) as VmStatus;
      } catch (e) {
        if (!(isDiskchainError(e) && (e.code === 'QMP_CLOSED' || e.code === 'TIMEOUT'))) throw e;
        // The worker may just have ended between the two looks: read the record again.
        const again = await readRunRecord(real);
        if (again && again.state !== 'Off' && again.state !== 'Saved' && processAlive(again.pid)) {
          return { ...base, state: again.state, workerPid: again.pid, qemuPid: again.qemuPid, started: again.started, reason: `the worker (pid ${again.pid}) does not answer: ${e.message}` };
        }
        return readVmStatus(folder);
      }
    }
    const orphan = record.qemuPid !== null && processAlive(record.qemuPid) ? `; its QEMU (pid ${record.qemuPid}) is still running: vm stop --force ends it` : '';
    base.stale = `the worker (pid ${record.pid}) died while the VM was ${record.state}; run/ is stale${orphan}`;
    base.reason = base.stale;
    if (orphan) base.qemuPid = record.qemuPid;
  } else if (record?.reason) {
    base.reason = `last run: ${record.reason}`;
  }
  const saved = await readSavedState(real, m);
  if (saved.status === 'valid') {
    base.state = 'Saved';
    base.saved = { created: saved.record.created, checkpoint: saved.record.checkpoint };
  } else if (saved.status === 'stale') base.warnings.push(`a saved state is left that no longer fits the disks: ${saved.reason}; the next start boots`);
  return base;
}
