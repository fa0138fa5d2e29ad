/**
 * What `vm show` and `checkpoint list` print (plain JSON): the config, the disks with their chains,
 * the checkpoint tree with Now under its parent, each checkpoint's own bytes and the bytes its
 * removal would give back (measured from the allocation maps; nothing is written), unnamed layers,
 * and any operation left in the journal.
 */
import { openDisk } from '../chain/open-disk.js';
import { bytesOnDisk } from './collapse.js';
import type { VmFolder } from './folder.js';
import { childCheckpoints, childNodes, chainOf, namesOfNodes, nodeById } from './graph.js';
import type { Checkpoint, CheckpointType, VmConfig } from './manifest.js';
import { forecastRemove } from './forecast.js';
import { listRecords, readRecord } from './transaction.js';

export interface CheckpointDescription {
  id: string;
  name: string;
  parent: string | null;
  created: string;
  type: CheckpointType;
  group: string | null;
  children: string[];
  /** Bytes on disk of the layers this checkpoint froze, and its config and state. */
  ownBytes: number;
  /** Bytes a removal would give back (files deleted, less the growth of the files merged into); null when not measured. */
  reclaimBytes: number | null;
  disks: Array<{ id: string; node: string; file: string }>;
}

export interface VmDescription {
  id: string;
  name: string;
  folder: string;
  created: string;
  generation: number;
  config: VmConfig;
  disks: Array<{
    id: string;
    stem: string;
    format: string;
    /** The file Now writes (absolute). */
    path: string;
    file: string;
    virtualSize: number | null;
    /** From Now's leaf to the base: each layer's file, who names it, and its bytes on disk. */
    chain: Array<{ node: string; file: string; namedBy: string | null; bytes: number }>;
  }>;
  checkpoints: CheckpointDescription[];
  now: { parent: string | null; ownBytes: number; disks: Array<{ id: string; node: string; file: string; path: string }> };
  /** Layers no checkpoint names, kept because several children depend on them (or pending a merge). */
  unnamed: Array<{ node: string; disk: string; file: string; bytes: number; children: number }>;
  /** Bytes on disk of every file the manifest names. */
  bytes: number;
  /** Operations left in the journal (interrupted, or running in another process). */
  pending: Array<{ transaction: string; operation: string; command: string; started: string; pid: number }>;
}

async function fileBytes(vm: VmFolder, rel: string): Promise<number> {
  return bytesOnDisk(vm.path(rel));
}

export interface DescribeOptions {
  /** Measure what each checkpoint's removal gives back (reads allocation maps; default true). */
  reclaim?: boolean;
  signal?: AbortSignal;
}

export async function describeVm(vm: VmFolder, options: DescribeOptions = {}): Promise<VmDescription> {
  const m = vm.manifest;
  const names = namesOfNodes(m);
  const sizes = new Map<string, number>();
  for (const n of m.nodes) sizes.set(n.id, await fileBytes(vm, n.file));
  const pending: VmDescription['pending'] = [];
  for (const path of await listRecords(vm.realFolder)) {
    const r = await readRecord(path).catch(() => undefined);
    if (r) pending.push({ transaction: r.id, operation: r.operation, command: r.command, started: r.started, pid: r.pid });
  }
  const sidecarBytes = async (c: Checkpoint): Promise<number> => (await fileBytes(vm, c.config)) + (c.state ? await fileBytes(vm, c.state) : 0);
  const checkpoints: CheckpointDescription[] = [];
  for (const c of m.checkpoints) {
    let reclaimBytes: number | null = null;
    if ((options.reclaim ?? true) && pending.length === 0) reclaimBytes = (await forecastRemove(vm, c, false, options.signal)).bytesReclaimed;
    checkpoints.push({
      id: c.id,
      name: c.name,
      parent: c.parent,
      created: c.created,
      type: c.type,
      group: c.group,
      children: childCheckpoints(m, c.id).map((k) => k.id),
      ownBytes: Object.values(c.disks).reduce((s, n) => s + (sizes.get(n) ?? 0), 0) + (await sidecarBytes(c)),
      reclaimBytes,
      disks: m.disks.map((d) => ({ id: d.id, node: c.disks[d.id]!, file: nodeById(m, c.disks[d.id]!).file })),
    });
  }
  const disks: VmDescription['disks'] = [];
  for (const d of m.disks) {
    const leaf = nodeById(m, m.now.disks[d.id]!);
    let virtualSize: number | null = null;
    const disk = await openDisk(vm.path(leaf.file), d.format === 'raw' ? { format: 'raw' } : {}).catch(() => undefined);
    if (disk) {
      virtualSize = disk.virtualSize;
      await disk.close();
    }
    disks.push({
      id: d.id,
      stem: d.stem,
      format: d.format,
      path: vm.path(leaf.file),
      file: leaf.file,
      virtualSize,
      chain: chainOf(m, leaf.id).map((n) => ({ node: n.id, file: n.file, namedBy: names.get(n.id) ?? null, bytes: sizes.get(n.id) ?? 0 })),
    });
  }
  const unnamed = m.nodes.filter((n) => !names.has(n.id)).map((n) => ({ node: n.id, disk: n.disk, file: n.file, bytes: sizes.get(n.id) ?? 0, children: childNodes(m, n.id).length }));
  let bytes = [...sizes.values()].reduce((s, b) => s + b, 0);
  for (const c of m.checkpoints) bytes += await sidecarBytes(c);
  return {
    id: m.id,
    name: m.name,
    folder: vm.folder,
    created: m.created,
    generation: m.generation,
    config: m.config,
    disks,
    checkpoints,
    now: {
      parent: m.now.parent,
      ownBytes: Object.values(m.now.disks).reduce((s, n) => s + (sizes.get(n) ?? 0), 0),
      disks: m.disks.map((d) => ({ id: d.id, node: m.now.disks[d.id]!, file: nodeById(m, m.now.disks[d.id]!).file, path: vm.path(nodeById(m, m.now.disks[d.id]!).file) })),
    },
    unnamed,
    bytes,
    pending,
  };
}
