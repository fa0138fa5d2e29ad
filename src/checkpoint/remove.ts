/**
 * Remove-VMSnapshot (and -IncludeAllChildSnapshots with `subtree`): the checkpoint's name and
 * config go; its children (and Now) move up to its parent; its disk layers become unnamed nodes,
 * which Hyper-V's rules then settle:
 *
 *   no child left      (an off-branch leaf)  the file is deleted in this transaction's finish
 *   one child          merged with it afterwards (collapse.ts), in the direction that copies less
 *   several children   kept as an unnamed node, merged later when one child is left
 *
 *   plan (pure)        the tree without the checkpoint(s), unnamed leaves pruned
 *   forecast           every merge that will follow, against the free space: NO_SPACE before anything
 *   record → commit    vm.json: the new tree (the layers to merge still in the graph, unnamed)
 *   finish             the pruned layers' files and the checkpoints' configs deleted; the record
 *                      stays (step collapsing) and lists the layers to merge
 *   collapse × n       one transaction each (collapse.ts): merge, commit, delete the merged file
 *   drop               the record: the removal is over
 *
 * The tree change commits first and the merges follow, and every intermediate state reads the same:
 * a crash loses nothing, and the next command finishes the merge that was running. Removing a
 * subtree never touches Now's content: if Now is inside it, Now moves up with its layers kept.
 */
import type { LongOperationOptions } from '../ops/progress.js';
import { ensureCollapsesFit, settleFollowUp, forecastCollapse, type CollapseForecast, type CollapseResult } from './collapse.js';
import type { VmFolder } from './folder.js';
import { checkpointById, collapsibleNodes, pruneUnnamedLeaves, subtreeOf } from './graph.js';
import type { Checkpoint, Manifest } from './manifest.js';
import { runPlan, type Plan, type Transaction } from './transaction.js';

export interface RemoveOptions extends LongOperationOptions {
  /** Remove the checkpoint and every checkpoint below it. */
  subtree?: boolean;
  command?: string;
}

export interface RemoveResult {
  removed: Array<{ id: string; name: string }>;
  /** Layer files deleted (off-branch leaves). */
  deleted: string[];
  /** Layers merged with their only child. */
  merged: CollapseResult[];
  /** Layers kept as unnamed nodes because several children still depend on them. */
  kept: string[];
}

/** The manifest without `ids` (children re-parented to the nearest kept ancestor) and what goes with them. */
export function planRemove(m: Manifest, ids: Set<string>): { plan: Plan; unnamed: Set<string> } {
  const keptParent = (id: string | null): string | null => {
    let at = id;
    while (at !== null && ids.has(at)) at = checkpointById(m, at).parent;
    return at;
  };
  const gone = m.checkpoints.filter((c) => ids.has(c.id));
  const tree: Manifest = {
    ...m,
    checkpoints: m.checkpoints.filter((c) => !ids.has(c.id)).map((c) => ({ ...c, parent: keptParent(c.parent) })),
    now: { ...m.now, parent: keptParent(m.now.parent) },
  };
  const { manifest, dropped } = pruneUnnamedLeaves(tree);
  const droppedIds = new Set(dropped.map((n) => n.id));
  // The removed checkpoints' layers, and the layers that lost a child, may be down to one child.
  const unnamed = new Set([...gone.flatMap((c) => Object.values(c.disks)), ...dropped.map((n) => n.parent).filter((p): p is string => p !== null)].filter((n) => !droppedIds.has(n)));
  const removes = [...dropped.map((n) => n.file), ...gone.flatMap((c: Checkpoint) => [c.config, ...(c.state ? [c.state] : [])])];
  return { plan: { operation: 'remove', manifest, actions: [], removes, followUp: [...unnamed] }, unnamed };
}

/** The merges a plan leaves to do (unnamed nodes of this removal with one child), measured. */
export async function forecastRemoval(vm: VmFolder, after: Manifest, unnamed: Set<string>, signal?: AbortSignal): Promise<CollapseForecast[]> {
  const out: CollapseForecast[] = [];
  for (const { node, child } of collapsibleNodes(after)) if (unnamed.has(node.id)) out.push(await forecastCollapse(vm, after, node, child, signal));
  return out;
}

/** A removal planned and forecast (nothing written yet). */
export interface PlannedRemoval {
  plan: Plan;
  unnamed: Set<string>;
  targets: Checkpoint[];
  forecasts: CollapseForecast[];
  /** Layer files the commit's finish deletes (off-branch leaves). */
  deleted: string[];
}

export async function planRemoval(vm: VmFolder, checkpoint: Checkpoint, options: RemoveOptions = {}): Promise<PlannedRemoval> {
  const targets = options.subtree ? subtreeOf(vm.manifest, checkpoint.id) : [checkpoint];
  const { plan, unnamed } = planRemove(vm.manifest, new Set(targets.map((c) => c.id)));
  const forecasts = await forecastRemoval(vm, plan.manifest, unnamed, options.signal);
  const deleted = plan.removes.filter((f) => vm.manifest.nodes.some((n) => n.file === f));
  return { plan, unnamed, targets, forecasts, deleted };
}

/** After the commit: the follow-up merges, then the record dropped; what was removed, deleted, merged, kept. */
export async function settleRemoval(tx: Transaction, planned: PlannedRemoval, options: RemoveOptions & { command: string }): Promise<RemoveResult> {
  const { collapsed, deleted: more } = await settleFollowUp(tx, { command: options.command, ...(options.signal ? { signal: options.signal } : {}), ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
  const kept = tx.vm.manifest.nodes.filter((n) => planned.unnamed.has(n.id)).map((n) => n.file);
  return { removed: planned.targets.map((c) => ({ id: c.id, name: c.name })), deleted: [...planned.deleted, ...more], merged: collapsed, kept };
}

export async function removeCheckpoint(vm: VmFolder, checkpoint: Checkpoint, options: RemoveOptions = {}): Promise<RemoveResult> {
  const command = options.command ?? 'checkpoint remove';
  const planned = await planRemoval(vm, checkpoint, options);
  await ensureCollapsesFit(vm, planned.forecasts, `removing "${checkpoint.name}" (its layers merge with their only child)`);
  const tx = await runPlan(vm, planned.plan, { command, ...(options.signal ? { signal: options.signal } : {}) });
  return settleRemoval(tx, planned, { ...options, command });
}
