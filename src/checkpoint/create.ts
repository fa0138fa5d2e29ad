/**
 * Checkpoint-VM: freezes every disk at once. The file Now writes becomes the checkpoint's node and
 * a new differencing child `<disk>_<GUID>.avhdx` (.avhd for VHD) takes Now's writes from then on.
 *
 *   plan (pure)          a checkpoint id, one new node per disk, the manifest with Now moved under it
 *   forecast             the new files' metadata against the free space: NO_SPACE before anything
 *   record               journal/<tx>.json
 *   action: config       Snapshots/<id>/config.json, the VM's config at this instant
 *   action: child × disk each new child over Now's current leaf
 *   [beforeCommit]       a running VM's worker switches its leaves to the children here (issue 13)
 *   commit               vm.json: the checkpoint names the old leaves, Now the children
 *   finish               the record dropped (nothing to delete)
 *
 * A crash before the commit is rolled back (the children deleted): the old tree, unchanged.
 */
import { randomGuid } from '../io/guid.js';
import { DiskchainError } from '../io/errors.js';
import { ensureSpace } from '../ops/space.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { checkpointConfigFile, DISKS_DIR, layerFileName, SNAPSHOTS_DIR, type VmFolder } from './folder.js';
import { readSavedState, SAVED_STATE_FILE } from './saved-state.js';
import { virtualSizes } from './disks.js';
import { nodeById } from './graph.js';
import type { Checkpoint, CheckpointType, DiskNode, Manifest } from './manifest.js';
import { runPlan, type Plan, type Transaction } from './transaction.js';

export interface CheckpointOptions extends LongOperationOptions {
  /** Default: "<VM name> (<local date and time>)", as Hyper-V names them. */
  name?: string;
  /** Default: the VM's checkpoint type setting (an off VM takes disks only either way). */
  type?: CheckpointType;
  /** The instant recorded (group checkpoints share one). */
  created?: Date;
  /** Group checkpoints: the group's id. */
  group?: string;
  /** Between the children's creation and the commit (a running VM switches its leaves here). */
  beforeCommit?: (tx: Transaction) => Promise<void>;
  command?: string;
}

/** A checkpoint as plain JSON, with the files it froze. */
export interface CheckpointInfo {
  id: string;
  name: string;
  parent: string | null;
  created: string;
  type: CheckpointType;
  group: string | null;
  disks: Array<{ id: string; node: string; file: string }>;
}

export function checkpointInfo(m: Manifest, c: Checkpoint): CheckpointInfo {
  return {
    id: c.id,
    name: c.name,
    parent: c.parent,
    created: c.created,
    type: c.type,
    group: c.group,
    disks: m.disks.map((d) => ({ id: d.id, node: c.disks[d.id]!, file: nodeById(m, c.disks[d.id]!).file })),
  };
}

/** "2024-01-02 03:04:05" in local time. */
export function localDateTime(d: Date): string {
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function checkName(name: string): string {
  if (name.trim().length === 0) throw new DiskchainError('INVALID_ARGUMENT', 'a checkpoint name cannot be empty');
  if (name.length > 100) throw new DiskchainError('INVALID_ARGUMENT', `a checkpoint name has at most 100 characters (this one has ${name.length})`);
  return name;
}

/**
 * Plans a checkpoint of the VM's Now. `saved`: Now has a valid saved state (a Saved VM): as Hyper-V
 * does, the checkpoint is a standard one (unless asked otherwise) whose state is a link to that
 * state, and the VM stays Saved: its saved state follows Now onto the new children at the commit.
 */
export function planCheckpoint(m: Manifest, options: CheckpointOptions, saved?: { machine: string }): { plan: Plan; checkpoint: Checkpoint } {
  const setting = m.config.checkpointType;
  if (setting === 'disabled') throw new DiskchainError('INVALID_ARGUMENT', `checkpoints are disabled for ${m.name} (config.checkpointType)`);
  for (const d of m.disks) {
    if (d.format === 'raw') throw new DiskchainError('UNSUPPORTED', `disk "${d.id}" is a raw image, which cannot have differencing children: convert it to VHDX to take checkpoints`);
  }
  const created = options.created ?? new Date();
  const id = randomGuid();
  const name = checkName(options.name ?? `${m.name} (${localDateTime(created)})`);
  const type: CheckpointType = options.type ?? (setting === 'standard' || saved ? 'standard' : 'production');
  const newNodes: DiskNode[] = m.disks.map((d) => {
    const nodeId = randomGuid();
    return { id: nodeId, disk: d.id, file: layerFileName(d.stem, nodeId, d.format), parent: m.now.disks[d.id]! };
  });
  const checkpoint: Checkpoint = {
    id,
    name,
    created: created.toISOString(),
    type,
    parent: m.now.parent,
    group: options.group ?? null,
    disks: { ...m.now.disks },
    config: checkpointConfigFile(id),
    state: null,
  };
  const manifest: Manifest = {
    ...m,
    nodes: [...m.nodes, ...newNodes],
    checkpoints: [...m.checkpoints, checkpoint],
    now: { parent: id, disks: Object.fromEntries(newNodes.map((n) => [n.disk, n.id])) },
  };
  const plan: Plan = {
    operation: 'checkpoint-create',
    manifest,
    actions: [{ kind: 'json', file: checkpoint.config, value: m.config }, ...newNodes.map((n) => ({ kind: 'child' as const, file: n.file, parent: nodeById(m, n.parent!).file }))],
    removes: [],
  };
  if (saved) {
    plan.carrySavedState = true;
    if (type === 'standard') {
      checkpoint.state = `${SNAPSHOTS_DIR}/${id}/state.vmstate`;
      plan.actions[0] = { kind: 'json', file: checkpoint.config, value: { ...m.config, machine: saved.machine } };
      plan.actions.splice(1, 0, { kind: 'link', from: SAVED_STATE_FILE, file: checkpoint.state });
    }
  }
  return { plan, checkpoint };
}

/** planCheckpoint of an opened VM, with its saved state when Now has a valid one. */
export async function planCheckpointOf(vm: VmFolder, options: CheckpointOptions): Promise<{ plan: Plan; checkpoint: Checkpoint }> {
  const saved = await readSavedState(vm.realFolder, vm.manifest);
  return planCheckpoint(vm.manifest, options, saved.status === 'valid' ? { machine: saved.record.machine } : undefined);
}

/** An upper bound of a new differencing file's size (headers, BAT and locators; no data yet). */
export function childFileBytes(format: 'vhdx' | 'vhd' | 'raw', virtualSize: number): number {
  const MIB = 1024 * 1024;
  if (format === 'vhd') return 64 * 1024 + Math.ceil(virtualSize / (2 * MIB)) * 4;
  // MS-VHDX: 1 MiB each for headers, log and metadata, then the BAT (payload and sector bitmap entries).
  return 4 * MIB + Math.ceil((Math.ceil(virtualSize / (2 * MIB)) * 2 * 8) / MIB) * MIB;
}

/** An upper bound of what a checkpoint's new files take: one child per disk, its config and the record. */
export function checkpointBytes(vm: VmFolder, sizes: Map<string, number>): number {
  let bytes = 8192; // config.json and the record
  for (const d of vm.manifest.disks) bytes += childFileBytes(d.format, sizes.get(d.id) ?? 0);
  return bytes;
}

/** NO_SPACE, before anything is written, when the new files do not fit. */
export async function forecastCheckpoint(vm: VmFolder, sizes: Map<string, number>): Promise<number> {
  const bytes = checkpointBytes(vm, sizes);
  await ensureSpace(vm.path(`${DISKS_DIR}/x`), bytes, 'the checkpoint');
  return bytes;
}

/** Checkpoint-VM on an opened VM (write lock held). */
export async function createCheckpoint(vm: VmFolder, options: CheckpointOptions = {}): Promise<CheckpointInfo> {
  const { plan, checkpoint } = await planCheckpointOf(vm, options);
  await forecastCheckpoint(vm, await virtualSizes(vm));
  await runPlan(vm, plan, { command: options.command ?? 'checkpoint create', ...(options.signal ? { signal: options.signal } : {}), ...(options.beforeCommit ? { beforeCommit: options.beforeCommit } : {}) });
  return checkpointInfo(vm.manifest, checkpoint);
}
