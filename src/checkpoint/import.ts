/**
 * `vm import <folder-of-disks> <new-vm>`: a VM from what a lost Hyper-V run left behind. The trees
 * that `scan` finds (ops/scan.ts: every disk linked to its parent by identity) become the VM's disks,
 * one tree per disk, and the tree's layers its checkpoints, as Hyper-V made them:
 *
 *   the newest leaf      Now's file (Now writes into it, as Hyper-V's running VM did)
 *   every other layer    a checkpoint, named "<VM> (<file time>)", created at its file's time (a
 *                        layer stops changing when its checkpoint freezes it); its parent is the
 *                        checkpoint of the layer below. Other leaves (branches left when a checkpoint
 *                        was applied) are kept as checkpoints, so nothing is lost
 *   several disks        the trees must have one shape (children ordered by file time): the i-th
 *                        layers of every tree make the i-th checkpoint, at the newest of their times
 *
 * Refused before anything is written: no tree, an incomplete tree (a layer's parent missing), trees of
 * different shapes. Copies of a layer (scan's duplicateOf) are left out and listed. The files come in
 * as `vm create --disk` brings them (copied or moved, each child re-pointed at its parent's new place)
 * in one vm-create transaction (vm-create.ts): a crash leaves no VM, or the whole one.
 */
import { basename, join, resolve } from 'node:path';
import { mkdir, realpath, stat } from 'node:fs/promises';
import { DiskchainError } from '../io/errors.js';
import { randomGuid } from '../io/guid.js';
import { findDependents } from '../ops/dependents.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { scanFolders, type ScanNode, type ScanTree } from '../ops/scan.js';
import { ensureSpace } from '../ops/space.js';
import { localDateTime } from './create.js';
import { checkpointConfigFile, DISKS_DIR } from './folder.js';
import { VmConfigSchema, parseWith, type Checkpoint, type DiskNode, type DiskSlot } from './manifest.js';
import type { Action } from './transaction.js';
import { arrival, commitNewVm, DEFAULT_MEMORY_BYTES, firstManifest, prepareNewVmFolder, uniqueName } from './vm-create.js';
import { openDisk } from '../chain/open-disk.js';

export interface ImportVmOptions extends LongOperationOptions {
  name?: string;
  /** How the files come in: copied (the folder stays as it is) or moved. */
  adopt: 'copy' | 'move';
  memoryBytes?: number;
  cpus?: number;
  command?: string;
}

export interface ImportedVm {
  folder: string;
  id: string;
  name: string;
  disks: Array<{ id: string; root: string; layers: number }>;
  checkpoints: Array<{ id: string; name: string; parent: string | null; created: string; files: string[] }>;
  now: { parent: string | null; files: string[] };
  /** Files scan found that the VM leaves out (copies of a layer), with why. */
  leftOut: Array<{ path: string; reason: string }>;
}

/** The tree's layers in a canonical order: parents first, children by file time (then path). */
function ordered(tree: ScanTree, leftOut: Set<string>): ScanNode[] {
  const byPath = new Map(tree.nodes.map((n) => [n.path, n]));
  const out: ScanNode[] = [];
  const walk = (n: ScanNode): void => {
    out.push(n);
    const kids = n.children.map((c) => byPath.get(c)!).filter((c) => c && !leftOut.has(c.path));
    kids.sort((a, b) => a.mtimeMs - b.mtimeMs || (a.path < b.path ? -1 : 1));
    for (const k of kids) walk(k);
  };
  walk(byPath.get(tree.root)!);
  return out;
}

/** The shape of an ordered tree: each layer's parent position (-1 for the root). */
function shape(nodes: ScanNode[]): number[] {
  const at = new Map(nodes.map((n, i) => [n.path, i]));
  return nodes.map((n) => (n.parent === null ? -1 : at.get(n.parent)!));
}

export async function importVm(source: string, target: string, options: ImportVmOptions): Promise<ImportedVm> {
  const command = options.command ?? 'vm import';
  const folder = resolve(target);
  const report = await scanFolders([resolve(source)], { maxDepth: 0, ...(options.signal ? { signal: options.signal } : {}) });
  if (report.trees.length === 0) throw new DiskchainError('NOT_FOUND', `scan found no VHDX or VHD disks in ${resolve(source)}`, { file: resolve(source) });
  const incomplete = report.trees.filter((t) => !t.complete);
  if (incomplete.length > 0) {
    throw new DiskchainError('PARENT_NOT_FOUND', `${incomplete.map((t) => t.root).join(', ')} ${incomplete.length === 1 ? 'is a differencing disk whose parent' : 'are differencing disks whose parents'} scan could not find: see diskchain scan ${resolve(source)} for where ${incomplete.length === 1 ? 'it looks' : 'they look'}`, { file: incomplete[0]!.root });
  }
  const leftOut: ImportedVm['leftOut'] = [];
  const skip = new Set<string>();
  for (const t of report.trees) for (const n of t.nodes) if (n.duplicateOf) (skip.add(n.path), leftOut.push({ path: n.path, reason: `a copy of ${n.duplicateOf} (same identity), an older state of it` }));
  const trees = [...report.trees].sort((a, b) => (a.root < b.root ? -1 : 1)).map((t) => ({ tree: t, nodes: ordered(t, skip) }));
  const first = trees[0]!;
  const sig = JSON.stringify(shape(first.nodes));
  for (const t of trees.slice(1)) {
    if (JSON.stringify(shape(t.nodes)) !== sig) {
      throw new DiskchainError('INVALID_ARGUMENT', `the disks' trees have different shapes (${first.tree.root}: ${first.nodes.length} layers, ${t.tree.root}: ${t.nodes.length}), so their checkpoints cannot be paired: put each disk's files in a folder of its own and import them as separate VMs`, { file: t.tree.root });
    }
  }
  // Now: the newest leaf (by the newest file time across the disks at that position).
  const positions = first.nodes.map((_, i) => trees.map((t) => t.nodes[i]!));
  const isLeaf = (i: number): boolean => first.nodes[i]!.children.filter((c) => !skip.has(c)).length === 0;
  const time = (i: number): number => Math.max(...positions[i]!.map((n) => n.mtimeMs));
  let nowAt = -1;
  for (let i = 0; i < positions.length; i++) if (isLeaf(i) && (nowAt < 0 || time(i) > time(nowAt))) nowAt = i;

  const existed = await prepareNewVmFolder(folder, command);
  await mkdir(folder, { recursive: true });
  const folderDev = (await stat(folder)).dev;
  const name = options.name ?? basename(folder);
  const files = new Set<string>();
  const stems = new Set<string>();
  const slots: DiskSlot[] = [];
  const nodeIds = positions.map(() => trees.map(() => randomGuid()));
  const nodes: DiskNode[] = [];
  const copies: Action[] = [];
  const relinks: Action[] = [];
  const removeOutside: string[] = [];
  let bytes = 0;
  const reals = new Set<string>();
  for (const [d, t] of trees.entries()) {
    const root = t.nodes[0]!;
    const stem = uniqueName(basename(root.path).replace(/\.[^.]+$/, ''), stems);
    const slot: DiskSlot = { id: `disk${d}`, stem, format: root.format };
    slots.push(slot);
    const fileOf: string[] = [];
    for (const [i, n] of t.nodes.entries()) {
      const real = await realpath(n.path);
      reals.add(real);
      const file = `${DISKS_DIR}/${uniqueName(basename(n.path), files)}`;
      fileOf.push(file);
      const a = await arrival(options.adopt, real, file, folderDev);
      copies.push(a.action);
      bytes += a.bytes;
      removeOutside.push(...a.removeOutside);
      const parentAt = n.parent === null ? -1 : t.nodes.findIndex((x) => x.path === n.parent);
      nodes.push({ id: nodeIds[i]![d]!, disk: slot.id, file, parent: parentAt < 0 ? null : nodeIds[parentAt]![d]! });
      if (parentAt >= 0) relinks.push({ kind: 'relink', file, parent: fileOf[parentAt]!, undo: options.adopt === 'move' ? { child: real, parent: await realpath(t.nodes[parentAt]!.path) } : null });
    }
  }
  if (options.adopt === 'move') {
    // Disks elsewhere in the folder that name one of these as parent would lose it.
    const identities = await Promise.all([...reals].map(async (path) => {
      const disk = await openDisk(path);
      const identity = disk.identity();
      await disk.close();
      return { path, identities: [identity] };
    }));
    const others = await findDependents(identities, new Set([...reals, ...skip]));
    if (others.length > 0) throw new DiskchainError('HAS_DEPENDENTS', `refusing to move: ${others.map((o) => o.path).join(', ')} depend on these disks and would lose their parent. Use --copy`, { file: others[0]!.path, dependents: others.map((o) => o.path) });
  }
  const config = parseWith(VmConfigSchema, { memoryBytes: options.memoryBytes ?? DEFAULT_MEMORY_BYTES, cpus: options.cpus ?? 1, checkpointType: 'standard' }, 'the VM settings');
  const checkpointIds = positions.map(() => randomGuid());
  const checkpoints: Checkpoint[] = [];
  const configs: Action[] = [];
  for (const [i, n] of first.nodes.entries()) {
    if (i === nowAt) continue;
    const created = new Date(time(i));
    const parentAt = n.parent === null ? -1 : first.nodes.findIndex((x) => x.path === n.parent);
    const c: Checkpoint = {
      id: checkpointIds[i]!,
      name: `${name} (${localDateTime(created)})`,
      created: created.toISOString(),
      type: 'standard',
      parent: parentAt < 0 ? null : checkpointIds[parentAt]!,
      group: null,
      disks: Object.fromEntries(slots.map((s, d) => [s.id, nodeIds[i]![d]!])),
      config: checkpointConfigFile(checkpointIds[i]!),
      state: null,
    };
    checkpoints.push(c);
    configs.push({ kind: 'json', file: c.config, value: config });
  }
  const nowNode = first.nodes[nowAt]!;
  const nowParentAt = nowNode.parent === null ? -1 : first.nodes.findIndex((x) => x.path === nowNode.parent);
  const manifest = firstManifest({
    name,
    config,
    disks: slots,
    nodes,
    checkpoints,
    now: { parent: nowParentAt < 0 ? null : checkpointIds[nowParentAt]!, disks: Object.fromEntries(slots.map((s, d) => [s.id, nodeIds[nowAt]![d]!])) },
  });
  await ensureSpace(join(folder, 'x'), bytes + 8192 * (checkpoints.length + 1), `importing ${resolve(source)}`);
  const vm = await commitNewVm(folder, existed, { manifest, actions: [...copies, ...relinks, ...configs], removes: [], removeOutside }, { command, ...(options.signal ? { signal: options.signal } : {}) });
  const filesOf = (i: number): string[] => slots.map((_, d) => vm.path(nodes.find((x) => x.id === nodeIds[i]![d])!.file));
  return {
    folder,
    id: manifest.id,
    name,
    disks: slots.map((s, d) => ({ id: s.id, root: trees[d]!.tree.root, layers: trees[d]!.nodes.length })),
    checkpoints: checkpoints.map((c) => ({ id: c.id, name: c.name, parent: c.parent, created: c.created, files: filesOf(checkpointIds.indexOf(c.id)) })),
    now: { parent: manifest.now.parent, files: filesOf(nowAt) },
    leftOut,
  };
}
