/**
 * New-VM: makes a VM folder. `disks` are adopted (copied or moved into `Virtual Hard Disks/`, the
 * caller chooses; a disk with parents brings its whole chain, each child re-pointed at its parent's
 * new place), `newDisks` are created as empty dynamic VHDX (or VHD) files.
 *
 *   plan (pure but for opening the chains)   slots, nodes, files, the first manifest
 *   forecast                                 copies and new files against the free space
 *   record                                   <vm>/journal/<tx>.json
 *   actions                                  copy | move each layer (base first), relink each
 *                                            adopted child, create each new disk
 *   commit                                   vm.json written (generation 1)
 *   finish                                   sources of moves across file systems deleted
 *
 * A crash before the commit is rolled back by the next command on the folder: copies and new disks
 * deleted, moved files moved back and pointed at their parents' old places.
 */
import { lstat, mkdir, readdir, realpath, rm, rmdir, stat } from 'node:fs/promises';
import { basename, extname, join, resolve } from 'node:path';
import { DiskchainError } from '../io/errors.js';
import { randomGuid } from '../io/guid.js';
import { openChain } from '../chain/open-chain.js';
import { findDependents } from '../ops/dependents.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { ensureSpace } from '../ops/space.js';
import { childFileBytes } from './create.js';
import { DISKS_DIR, JOURNAL_DIR, MANIFEST_FILE, RUN_DIR, SNAPSHOTS_DIR, VmFolder } from './folder.js';
import { MANIFEST_KIND, MANIFEST_VERSION, parseWith, VmConfigSchema, type DiskNode, type DiskSlot, type Manifest, type VmConfig } from './manifest.js';
import { recoverVm } from './recover.js';
import { listRecords, readRecord, runPlan, type Action, type Plan } from './transaction.js';
import { VM_LOCK_FILE } from './vm-lock.js';

export interface CreateVmOptions extends LongOperationOptions {
  /** Default: the folder's name. */
  name?: string;
  /** Existing VHDX/VHD files (leaves of their chains) to adopt, in slot order. */
  disks?: string[];
  /** How adopted disks come in: required when `disks` is given. */
  adopt?: 'copy' | 'move';
  /** Empty dynamic disks to create, after the adopted ones. */
  newDisks?: Array<{ size: number; format?: 'vhdx' | 'vhd' }>;
  memoryBytes?: number;
  cpus?: number;
  checkpointType?: VmConfig['checkpointType'];
  /** Running VMs: how it boots, the guest agent's port, automatic checkpoints, the free-space reserve (VmConfig). */
  settings?: Partial<Pick<VmConfig, 'boot' | 'guestAgent' | 'automaticCheckpoints' | 'freeSpaceReserveBytes'>>;
  command?: string;
}

export interface CreatedVm {
  folder: string;
  id: string;
  name: string;
  disks: Array<{ id: string; path: string; layers: number }>;
}

interface Adopted {
  slot: DiskSlot;
  nodes: DiskNode[];
  actions: Action[];
  removeOutside: string[];
  bytes: number;
  layers: number;
}

/** `wanted`, or `<stem>-2.<ext>`, `-3`, ... when taken (case-insensitive, as Windows sees names). */
export function uniqueName(wanted: string, taken: Set<string>): string {
  const ext = extname(wanted);
  const stem = wanted.slice(0, wanted.length - ext.length);
  let name = wanted;
  for (let i = 2; taken.has(name.toLowerCase()); i++) name = `${stem}-${i}${ext}`;
  taken.add(name.toLowerCase());
  return name;
}

/** How one layer comes into the folder: moved (same file system, --move) or copied (its source deleted after the commit when moving across file systems). */
export async function arrival(mode: 'copy' | 'move', real: string, file: string, folderDev: number): Promise<{ action: Action; bytes: number; removeOutside: string[] }> {
  const s = await stat(real);
  if (mode === 'move' && s.dev === folderDev) return { action: { kind: 'move', from: real, file }, bytes: 0, removeOutside: [] };
  return { action: { kind: 'copy', from: real, file }, bytes: s.size, removeOutside: mode === 'move' ? [real] : [] };
}

/** Opens the chain of `path` and plans its layers' arrival (base first). */
async function planAdoption(path: string, index: number, mode: 'copy' | 'move', folderDev: number, files: Set<string>, stems: Set<string>, claimed: Set<string>): Promise<Adopted> {
  const chain = await openChain(path);
  try {
    const layers = [...chain.layers].reverse();
    const reals = await Promise.all(layers.map((l) => realpath(l.path)));
    for (const r of reals) {
      if (claimed.has(r)) throw new DiskchainError('INVALID_ARGUMENT', `${r} is in the chains of two adopted disks; a VM's disks cannot share a layer (convert one of them first)`, { file: r });
      claimed.add(r);
    }
    const base = layers[0]!;
    if (base.format === 'raw' && layers.length > 1) throw new DiskchainError('UNSUPPORTED', 'a raw image cannot be a parent', { file: base.path });
    if (mode === 'move') {
      const others = await findDependents(layers.map((l) => ({ path: l.path, identities: [l.identity()] })), new Set(reals));
      if (others.length > 0) {
        throw new DiskchainError('HAS_DEPENDENTS', `refusing to move ${path}'s chain: ${others.map((d) => d.path).join(', ')} depend${others.length === 1 ? 's' : ''} on it and would lose ${others.length === 1 ? 'its' : 'their'} parent. Use --copy`, { file: path, dependents: others.map((d) => d.path) });
      }
    }
    const slotStem = uniqueName(basename(base.path, extname(base.path)), stems);
    const slot: DiskSlot = { id: `disk${index}`, stem: slotStem, format: base.format };
    const nodes: DiskNode[] = [];
    const actions: Action[] = [];
    const removeOutside: string[] = [];
    let bytes = 0;
    for (const [i, layer] of layers.entries()) {
      const file = `${DISKS_DIR}/${uniqueName(basename(layer.path), files)}`;
      const a = await arrival(mode, reals[i]!, file, folderDev);
      actions.push(a.action);
      bytes += a.bytes;
      removeOutside.push(...a.removeOutside);
      nodes.push({ id: randomGuid(), disk: slot.id, file, parent: i === 0 ? null : nodes[i - 1]!.id });
    }
    for (let i = 1; i < layers.length; i++) {
      const undo = mode === 'move' ? { child: reals[i]!, parent: reals[i - 1]! } : null;
      actions.push({ kind: 'relink', file: nodes[i]!.file, parent: nodes[i - 1]!.file, undo });
    }
    return { slot, nodes, actions, removeOutside, bytes, layers: layers.length };
  } finally {
    await chain.close();
  }
}

/** A vm-create record left in `folder` by a dead process is rolled back (it never committed). */
async function rollBackInterruptedCreate(folder: string, command: string): Promise<void> {
  const records = await listRecords(folder);
  if (records.length === 0) return;
  const record = await readRecord(records[0]!);
  const vm = await VmFolder.forNew(folder, record.manifest, command);
  try {
    await recoverVm(vm);
  } finally {
    await vm.close();
  }
}

/**
 * A new or empty folder for a VM (an interrupted create in it rolled back first); returns whether it
 * existed. EXISTS when it is a VM folder already, or holds anything else.
 */
export async function prepareNewVmFolder(folder: string, command: string): Promise<boolean> {
  const existing = await lstat(folder).catch(() => undefined);
  if (!existing) return false;
  if (!existing.isDirectory()) throw new DiskchainError('EXISTS', `${folder} exists and is not a folder`, { file: folder });
  if (await lstat(join(folder, MANIFEST_FILE)).catch(() => undefined)) throw new DiskchainError('EXISTS', `${folder} is already a VM folder`, { file: folder });
  await rollBackInterruptedCreate(folder, command);
  // What an interrupted create leaves once rolled back: the layout's empty folders.
  const left: string[] = [];
  for (const n of await readdir(folder)) {
    if (n.startsWith('vm.lock')) continue;
    if ([JOURNAL_DIR, DISKS_DIR, SNAPSHOTS_DIR, RUN_DIR].includes(n) && (await readdir(join(folder, n)).catch(() => ['?'])).length === 0) continue;
    left.push(n);
  }
  if (left.length > 0) throw new DiskchainError('EXISTS', `${folder} is not empty (${left.slice(0, 5).join(', ')}); a VM is made in a new or empty folder`, { file: folder });
  return true;
}

/** The vm-create transaction: lock, layout, record, actions, vm.json; a failure leaves the folder as it was. */
export async function commitNewVm(folder: string, existed: boolean, plan: Omit<Plan, 'operation'>, options: { command: string; signal?: AbortSignal }): Promise<VmFolder> {
  const vm = await VmFolder.forNew(folder, plan.manifest, options.command);
  try {
    await vm.ensureLayout();
    await runPlan(vm, { operation: 'vm-create', ...plan }, { command: options.command, ...(options.signal ? { signal: options.signal } : {}) });
  } catch (e) {
    await vm.close();
    if (!existed) {
      await rm(join(folder, VM_LOCK_FILE), { force: true });
      await removeEmptyTree(folder);
    }
    throw e;
  }
  await vm.close();
  return vm;
}

export const DEFAULT_MEMORY_BYTES = 1024 ** 3;

/** A new VM's first manifest (generation 1, a fresh id). */
export function firstManifest(f: Pick<Manifest, 'name' | 'config' | 'disks' | 'nodes' | 'checkpoints' | 'now'>): Manifest {
  return { kind: MANIFEST_KIND, version: MANIFEST_VERSION, id: randomGuid(), name: f.name, created: new Date().toISOString(), generation: 1, transaction: null, config: f.config, disks: f.disks, nodes: f.nodes, checkpoints: f.checkpoints, now: f.now };
}

export async function createVm(target: string, options: CreateVmOptions = {}): Promise<CreatedVm> {
  const command = options.command ?? 'vm create';
  const folder = resolve(target);
  const existed = await prepareNewVmFolder(folder, command);
  const disks = options.disks ?? [];
  const newDisks = options.newDisks ?? [];
  if (disks.length > 0 && !options.adopt) throw new DiskchainError('INVALID_ARGUMENT', 'say how the disks come into the VM folder: --copy (the originals stay as they are) or --move');
  if (disks.length + newDisks.length === 0) throw new DiskchainError('INVALID_ARGUMENT', 'a VM needs at least one disk: --disk FILE or --new-disk SIZE');
  const name = options.name ?? basename(folder);
  await mkdir(folder, { recursive: true });
  const folderDev = (await stat(folder)).dev;
  const files = new Set<string>();
  const stems = new Set<string>();
  const claimed = new Set<string>();
  const adopted: Adopted[] = [];
  for (const [i, path] of disks.entries()) adopted.push(await planAdoption(path, i, options.adopt!, folderDev, files, stems, claimed));
  const created = newDisks.map((d, j) => {
    const index = disks.length + j;
    const format = d.format ?? 'vhdx';
    const stem = uniqueName(`disk${index}`, stems);
    const file = `${DISKS_DIR}/${uniqueName(`${stem}.${format}`, files)}`;
    const slot: DiskSlot = { id: `disk${index}`, stem, format };
    const node: DiskNode = { id: randomGuid(), disk: slot.id, file, parent: null };
    return { slot, node, action: { kind: 'disk' as const, file, format, size: d.size }, bytes: childFileBytes(format, d.size) };
  });
  const leaves = [...adopted.map((a) => a.nodes[a.nodes.length - 1]!), ...created.map((c) => c.node)];
  const config: VmConfig = parseWith(VmConfigSchema, { memoryBytes: options.memoryBytes ?? DEFAULT_MEMORY_BYTES, cpus: options.cpus ?? 1, checkpointType: options.checkpointType ?? 'production', ...options.settings }, 'the VM settings');
  const manifest = firstManifest({
    name,
    config,
    disks: [...adopted.map((a) => a.slot), ...created.map((c) => c.slot)],
    nodes: [...adopted.flatMap((a) => a.nodes), ...created.map((c) => c.node)],
    checkpoints: [],
    now: { parent: null, disks: Object.fromEntries(leaves.map((n) => [n.disk, n.id])) },
  });
  await ensureSpace(join(folder, 'x'), adopted.reduce((s, a) => s + a.bytes, 0) + created.reduce((s, c) => s + c.bytes, 0), `creating the VM ${name}`);
  const vm = await commitNewVm(
    folder,
    existed,
    { manifest, actions: [...adopted.flatMap((a) => a.actions), ...created.map((c) => c.action)], removes: [], removeOutside: adopted.flatMap((a) => a.removeOutside) },
    { command, ...(options.signal ? { signal: options.signal } : {}) },
  );
  return {
    folder,
    id: manifest.id,
    name,
    disks: [...adopted.map((a) => ({ id: a.slot.id, path: vm.path(a.nodes[a.nodes.length - 1]!.file), layers: a.layers })), ...created.map((c) => ({ id: c.slot.id, path: vm.path(c.node.file), layers: 1 }))],
  };
}

/** Removes the folder and its sub-folders when they hold no file. */
async function removeEmptyTree(folder: string): Promise<void> {
  for (const name of await readdir(folder).catch(() => [] as string[])) {
    const path = join(folder, name);
    if ((await lstat(path)).isDirectory()) await removeEmptyTree(path);
  }
  await rmdir(folder).catch(() => undefined);
}
