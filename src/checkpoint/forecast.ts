/**
 * What an operation on a VM would do, told before it is done: the checkpoints that go, the files
 * deleted (and which of them hold Now's content, lost by an apply that does not save Now first), the
 * merges that follow (measured from the allocation maps, as the operation itself forecasts them),
 * the layers kept unnamed, where Now ends up, the most bytes the operation needs while it runs and
 * the bytes it gives back. Plans are pure and the measures only read: nothing is written.
 *
 * The console shows this on its space bar and in its dialogs (remove subtree: what will be merged
 * and the space it needs); `checkpoint list`'s "removal reclaims" is the remove forecast's total.
 */
import { readCheckpointConfig, planApply } from './apply.js';
import { bytesOnDisk, type CollapseForecast } from './collapse.js';
import { checkpointBytes, planCheckpoint } from './create.js';
import { virtualSizes } from './disks.js';
import { exportBytes, type ExportFormat } from './export.js';
import type { VmFolder } from './folder.js';
import { childNodes, subtreeOf } from './graph.js';
import type { Checkpoint, Manifest } from './manifest.js';
import { forecastRemoval, planRemove } from './remove.js';

export type OperationRequest =
  | { operation: 'create' }
  | { operation: 'apply'; checkpointFirst: boolean }
  | { operation: 'remove'; subtree: boolean }
  | { operation: 'export'; format?: ExportFormat };

export interface OperationForecast {
  operation: OperationRequest['operation'];
  /** Checkpoints that go (remove; with a subtree, every one below it too). */
  removed: Array<{ id: string; name: string }>;
  /** Files deleted once the tree change commits (layers, checkpoint configs and states), with their bytes on disk. */
  deleted: Array<{ file: string; bytes: number }>;
  /** Of those, the files that hold Now's writes: an apply without checkpoint-first loses them. */
  discarded: string[];
  /** New files: one differencing disk per disk (create, apply), or the flattened disks (export). */
  created: number;
  /** Unnamed layers down to one child afterwards, merged with it (each its own transaction). */
  merges: CollapseForecast[];
  /** Layers left unnamed because several children still depend on them. */
  kept: string[];
  /** Now's parent checkpoint afterwards. */
  nowParent: string | null;
  /** Upper bound of the bytes the operation takes while it runs (new files, merge growth, or the export's copies). */
  bytesNeeded: number;
  /** Bytes on disk given back once it is over (deleted files plus what the merges free); 0 for export. */
  bytesReclaimed: number;
}

function keptAfter(after: Manifest, unnamed: Set<string>): string[] {
  return after.nodes.filter((n) => unnamed.has(n.id) && childNodes(after, n.id).length > 1).map((n) => n.file);
}

async function summed(vm: VmFolder, files: string[]): Promise<Array<{ file: string; bytes: number }>> {
  const out: Array<{ file: string; bytes: number }> = [];
  for (const file of files) out.push({ file, bytes: await bytesOnDisk(vm.path(file)) });
  return out;
}

const total = (xs: number[]): number => xs.reduce((s, x) => s + x, 0);

/** Remove-VMSnapshot's forecast: the plan remove.ts runs, and the merges that follow it. */
export async function forecastRemove(vm: VmFolder, c: Checkpoint, subtree: boolean, signal?: AbortSignal): Promise<OperationForecast> {
  const m = vm.manifest;
  const targets = subtree ? subtreeOf(m, c.id) : [c];
  const { plan, unnamed } = planRemove(m, new Set(targets.map((x) => x.id)));
  const merges = await forecastRemoval(vm, plan.manifest, unnamed, signal);
  const deleted = await summed(vm, plan.removes);
  return {
    operation: 'remove',
    removed: targets.map((x) => ({ id: x.id, name: x.name })),
    deleted,
    discarded: [],
    created: 0,
    merges,
    kept: keptAfter(plan.manifest, unnamed),
    nowParent: plan.manifest.now.parent,
    bytesNeeded: total(merges.map((f) => f.bytesNeeded)),
    bytesReclaimed: total(deleted.map((d) => d.bytes)) + total(merges.map((f) => f.reclaimBytes)),
  };
}

/** The forecast of one operation on `c` (ignored for create, which checkpoints Now). */
export async function forecastOperation(vm: VmFolder, c: Checkpoint | null, request: OperationRequest, signal?: AbortSignal): Promise<OperationForecast> {
  const m = vm.manifest;
  const none = { removed: [], deleted: [], discarded: [], merges: [], kept: [], bytesReclaimed: 0 };
  if (request.operation === 'create') {
    return { operation: 'create', ...none, created: m.disks.length, nowParent: null, bytesNeeded: checkpointBytes(vm, await virtualSizes(vm)) };
  }
  if (!c) throw new Error('internal: the operation needs a checkpoint');
  if (request.operation === 'remove') return forecastRemove(vm, c, request.subtree, signal);
  if (request.operation === 'export') {
    return { operation: 'export', ...none, created: m.disks.length, nowParent: m.now.parent, bytesNeeded: await exportBytes(vm, c, request.format, signal) };
  }
  const saveAs = request.checkpointFirst ? planCheckpoint(m, {}).checkpoint : undefined;
  const { plan, unnamed, discarded } = planApply(m, c, await readCheckpointConfig(vm, c), saveAs);
  const merges = await forecastRemoval(vm, plan.manifest, unnamed, signal);
  const deleted = await summed(vm, plan.removes);
  const nowFiles = new Set(Object.values(m.now.disks).map((id) => m.nodes.find((n) => n.id === id)!.file));
  return {
    operation: 'apply',
    removed: [],
    deleted,
    discarded: discarded.map((n) => n.file).filter((f) => nowFiles.has(f)),
    created: m.disks.length,
    merges,
    kept: keptAfter(plan.manifest, unnamed),
    nowParent: c.id,
    bytesNeeded: checkpointBytes(vm, await virtualSizes(vm)) + total(merges.map((f) => f.bytesNeeded)),
    bytesReclaimed: total(deleted.map((d) => d.bytes)) + total(merges.map((f) => f.reclaimBytes)),
  };
}
