/**
 * Virtual machines and their checkpoint trees, as a library: thin over `src/checkpoint` (argument
 * checks, then one call). Every result is plain JSON; every failure a DiskchainError with a code;
 * long operations take `{ signal, onProgress }`.
 */
import type { DiskChain } from '../chain/disk-chain.js';
import { DiskchainError } from '../io/errors.js';
import { applyCheckpoint, type ApplyOptions, type ApplyResult } from '../checkpoint/apply.js';
import { checkVm, type CheckOptions, type VmCheckReport } from '../checkpoint/check.js';
import { checkpointInfo, createCheckpoint, type CheckpointInfo, type CheckpointOptions } from '../checkpoint/create.js';
import { describeVm, type DescribeOptions, type VmDescription } from '../checkpoint/describe.js';
import { openNodeChain } from '../checkpoint/disks.js';
import { exportCheckpoint, type ExportOptions, type ExportResult } from '../checkpoint/export.js';
import { forecastOperation, type OperationForecast, type OperationRequest } from '../checkpoint/forecast.js';
import type { VmFolder } from '../checkpoint/folder.js';
import { groupCheckpoint as runGroupCheckpoint, groupRemove as runGroupRemove, type GroupRemoveResult } from '../checkpoint/group.js';
import { liveGroupCheckpoint, type LiveGroupOptions as GroupCheckpointOptions, type LiveGroupResult as GroupCheckpointResult } from '../runtime/live-group.js';
import { liveGroupRemove } from '../runtime/live-group-remove.js';
import { liveWorker } from '../runtime/status.js';
import type { Manifest } from '../checkpoint/manifest.js';
import type { RecoveryReport } from '../checkpoint/recover.js';
import { removeCheckpoint, type RemoveOptions, type RemoveResult } from '../checkpoint/remove.js';
import { renameCheckpoint } from '../checkpoint/rename.js';
import { resolveCheckpoint } from '../checkpoint/resolve.js';
import { discardSavedState, savedStateFromCheckpoint } from '../checkpoint/saved-state.js';
import { resizeVmDisk } from '../checkpoint/resize-disk.js';
import type { ResizeResult } from '../ops/resize.js';
import { deleteVm, openVmFolder, type OpenVmFolderOptions } from '../checkpoint/vms.js';

export { createVm, type CreateVmOptions, type CreatedVm } from '../checkpoint/vm-create.js';
export { importVm, type ImportVmOptions, type ImportedVm } from '../checkpoint/import.js';
export { listVms, type VmListEntry } from '../checkpoint/vms.js';
export type { OperationForecast, OperationRequest };
export type { ApplyOptions, ApplyResult, CheckOptions, VmCheckReport, CheckpointInfo, CheckpointOptions, DescribeOptions, VmDescription, ExportOptions, ExportResult, GroupCheckpointOptions, GroupCheckpointResult, GroupRemoveResult, Manifest, RecoveryReport, RemoveOptions, RemoveResult };
export type { VmFinding } from '../checkpoint/check.js';
export type { Transaction } from '../checkpoint/transaction.js';

export type OpenVmOptions = OpenVmFolderOptions;

/** An opened VM folder. Holds the VM's lock (as opened) until close(). */
export class VirtualMachine {
  constructor(
    private readonly vm: VmFolder,
    /** Operations an earlier process left unfinished, settled when this VM was opened. */
    readonly recovered: RecoveryReport[],
  ) {}

  get folder(): string {
    return this.vm.folder;
  }
  get id(): string {
    return this.vm.manifest.id;
  }
  get name(): string {
    return this.vm.manifest.name;
  }
  /** The validated manifest (read-only view). */
  get manifest(): Readonly<Manifest> {
    return this.vm.manifest;
  }

  /** Config, disks and chains, the checkpoint tree with Now, sizes, pending operations. */
  describe(options: DescribeOptions = {}): Promise<VmDescription> {
    return describeVm(this.vm, options);
  }

  /** A checkpoint by id, id prefix or name (AMBIGUOUS when a name matches several). */
  checkpointInfo(ref: string): CheckpointInfo {
    return checkpointInfo(this.vm.manifest, resolveCheckpoint(this.vm.manifest, ref));
  }

  /**
   * What an operation would do before it is done (nothing is written): files deleted and discarded,
   * the merges that follow, layers kept, where Now goes, bytes needed and given back. `ref` names the
   * checkpoint (apply, remove, export); a create checkpoints Now and takes none.
   */
  forecast(ref: string | null, request: OperationRequest, options: { signal?: AbortSignal } = {}): Promise<OperationForecast> {
    const c = request.operation === 'create' ? null : resolveCheckpoint(this.vm.manifest, ref ?? '');
    return forecastOperation(this.vm, c, request, options.signal);
  }

  /** Checkpoint-VM: freezes every disk at once. */
  checkpoint(options: CheckpointOptions = {}): Promise<CheckpointInfo> {
    return createCheckpoint(this.vm, options);
  }

  /** Restore-VMSnapshot. Now is DISCARDED unless `checkpointFirst` saves it first. */
  /**
   * A standard checkpoint's memory state becomes Now's saved state (`saved: true`): the VM is Saved,
   * and `vm start` resumes it at the checkpoint's instant (Hyper-V does the same).
   */
  async apply(ref: string, options: ApplyOptions = {}): Promise<ApplyResult & { saved: boolean }> {
    const c = resolveCheckpoint(this.vm.manifest, ref);
    const result = await applyCheckpoint(this.vm, c, options);
    // Now's state was discarded (or kept in the checkpoint taken first): so is its saved state.
    if (c.state === null) {
      await discardSavedState(this.vm);
      return { ...result, saved: false };
    }
    await savedStateFromCheckpoint(this.vm, c, this.vm.manifest.config.machine ?? 'pc');
    return { ...result, saved: true };
  }

  /** Remove-VMSnapshot (with `subtree`, the checkpoint and all below it); layers merged as Hyper-V does. */
  remove(ref: string, options: RemoveOptions = {}): Promise<RemoveResult> {
    return removeCheckpoint(this.vm, resolveCheckpoint(this.vm.manifest, ref), options);
  }

  rename(ref: string, name: string): Promise<{ id: string; previous: string; name: string }> {
    return renameCheckpoint(this.vm, resolveCheckpoint(this.vm.manifest, ref), name);
  }

  /** A standalone VM folder with the disks flattened at the checkpoint. */
  export(ref: string, folder: string, options: ExportOptions = {}): Promise<ExportResult> {
    return exportCheckpoint(this.vm, resolveCheckpoint(this.vm.manifest, ref), folder, options);
  }

  /** Resize-VHD on a disk of the VM (refused while checkpoints exist: remove them or export first). */
  resizeDisk(diskId: string, size: number): Promise<ResizeResult & { vm: string; disk: string }> {
    return resizeVmDisk(this.vm, diskId, size);
  }

  /** What is on disk and not in the tree (and the reverse), with a safe plan; `repair` does the safe part. */
  check(options: CheckOptions = {}): Promise<VmCheckReport> {
    return checkVm(this.vm, options);
  }

  /**
   * A disk of the VM as a chain: Now's (writable when asked and the VM is opened for writing) or
   * a checkpoint's (always read-only). Close it before the next operation on the VM.
   */
  openDisk(diskId: string, options: { checkpoint?: string; writable?: boolean; forceShare?: boolean } = {}): Promise<DiskChain> {
    const share = options.forceShare ? { forceShare: true } : {};
    const m = this.vm.manifest;
    if (!m.disks.some((d) => d.id === diskId)) throw new DiskchainError('NOT_FOUND', `the VM has no disk "${diskId}" (it has ${m.disks.map((d) => d.id).join(', ')})`);
    if (options.checkpoint !== undefined) {
      if (options.writable) throw new DiskchainError('READ_ONLY', "a checkpoint's disks are frozen; write into Now");
      return openNodeChain(this.vm, resolveCheckpoint(m, options.checkpoint).disks[diskId]!, { allowSkips: true, ...share });
    }
    if (options.writable) this.vm.requireWrite();
    return openNodeChain(this.vm, m.now.disks[diskId]!, { writable: options.writable ?? false, allowSkips: true, ...share });
  }

  /** Deletes the VM's own files (vm rm); the VM is closed afterwards. */
  delete(): Promise<{ deleted: string[]; left: string[] }> {
    return deleteVm(this.vm);
  }

  close(): Promise<void> {
    return this.vm.close();
  }
}

/** Opens a VM folder (write lock by default; an interrupted operation is settled first). */
export async function openVm(folder: string, options: OpenVmOptions = {}): Promise<VirtualMachine> {
  const { vm, recovered } = await openVmFolder(folder, options);
  return new VirtualMachine(vm, recovered);
}

/** Opens the VM, runs `fn`, closes it whatever happens. */
export async function withVm<T>(folder: string, options: OpenVmOptions, fn: (vm: VirtualMachine) => Promise<T>): Promise<T> {
  const vm = await openVm(folder, options);
  try {
    return await fn(vm);
  } finally {
    await vm.close();
  }
}

/** Opens every VM folder for writing (each named once), runs `fn`, closes them all. */
async function withVmFolders<T>(folders: string[], command: string, fn: (vms: VmFolder[]) => Promise<T>): Promise<T> {
  const opened: VmFolder[] = [];
  try {
    for (const f of folders) {
      const { vm } = await openVmFolder(f, { command });
      if (opened.some((o) => o.realFolder === vm.realFolder)) {
        await vm.close();
        throw new DiskchainError('INVALID_ARGUMENT', `${f} is named twice`);
      }
      opened.push(vm);
    }
    return await fn(opened);
  } finally {
    for (const vm of opened) await vm.close();
  }
}

/**
 * Checkpoints several VMs at one instant under one group id, all or none. Running VMs are checkpointed
 * live by their workers, paused together (runtime/live-group.ts; `type` as a single live checkpoint's);
 * the result reports each guest's pause and the longest. VMs that are all off: the engine's group.
 */
export async function groupCheckpoint(folders: string[], options: GroupCheckpointOptions = {}): Promise<GroupCheckpointResult> {
  if (folders.length < 2) throw new DiskchainError('INVALID_ARGUMENT', 'a group checkpoint takes two VMs or more');
  for (const f of folders) if (await liveWorker(f)) return liveGroupCheckpoint(folders, options);
  const r = await withVmFolders(folders, options.command ?? 'checkpoint create (group)', (opened) => runGroupCheckpoint(opened, options));
  return { ...r, pauseMs: null, checkpoints: r.checkpoints.map((c) => ({ ...c, running: false, pauseMs: null, fallback: null, stateBytes: null })) };
}

/**
 * Removes one group's checkpoints from each VM, all or none (each VM's merges follow, as a single
 * removal's). Running VMs remove theirs through their workers, the merges live while the guests run
 * (runtime/live-group-remove.ts); VMs that are all off: the engine's group.
 */
export async function groupRemove(folders: string[], group: string, options: RemoveOptions = {}): Promise<GroupRemoveResult> {
  for (const f of folders) if (await liveWorker(f)) return liveGroupRemove(folders, group, options);
  return withVmFolders(folders, options.command ?? 'checkpoint remove (group)', (opened) => runGroupRemove(opened, group, options));
}
