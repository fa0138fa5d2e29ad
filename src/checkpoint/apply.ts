/**
 * Restore-VMSnapshot: Now starts again from a checkpoint. Now's current state is DISCARDED unless
 * it is saved first (`checkpointFirst`, Hyper-V's "Create checkpoint and apply"): its leaves are
 * deleted, and new differencing children of the checkpoint's layers take Now's writes. The VM's
 * config becomes the checkpoint's.
 *
 *   plan (pure)        one new node per disk under the checkpoint's nodes; Now's old leaves (and
 *                      unnamed layers only they kept) dropped from the graph, or, with
 *                      checkpointFirst, frozen as a new checkpoint in the same commit
 *   forecast           the new files' metadata: NO_SPACE before anything
 *   record
 *   action: config     [checkpointFirst] the saved checkpoint's Snapshots/<id>/config.json (a Saved
 *                      VM: and its saved state linked in as the checkpoint's state)
 *   action: child × disk
 *   commit             vm.json: Now under the checkpoint, on the new children
 *   finish             Now's old leaves deleted
 *   collapse           unnamed layers that are down to one child merge with it (collapse.ts)
 *
 * A crash before the commit is rolled back (the new children deleted, Now as it was).
 */
import { readFile } from 'node:fs/promises';
import { DiskchainError } from '../io/errors.js';
import { randomGuid } from '../io/guid.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { settleFollowUp, type CollapseResult } from './collapse.js';
import { checkpointInfo, forecastCheckpoint, planCheckpointOf, type CheckpointInfo } from './create.js';
import { virtualSizes } from './disks.js';
import { layerFileName, type VmFolder } from './folder.js';
import { nodeById, pruneUnnamedLeaves } from './graph.js';
import { parseWith, VmConfigSchema, type Checkpoint, type DiskNode, type Manifest, type VmConfig } from './manifest.js';
import { runPlan, type Action, type Plan, type Transaction } from './transaction.js';

export interface ApplyOptions extends LongOperationOptions {
  /** Save Now as a checkpoint first (true: the default name; a string: that name). Otherwise Now is discarded. */
  checkpointFirst?: boolean | string;
  beforeCommit?: (tx: Transaction) => Promise<void>;
  command?: string;
}

export interface ApplyResult {
  applied: { id: string; name: string };
  /** The checkpoint of Now taken first, when asked. */
  savedFirst: CheckpointInfo | null;
  /** Now's files that were discarded. */
  discarded: string[];
  now: { parent: string; disks: Array<{ id: string; node: string; file: string }> };
  merged: CollapseResult[];
}

/** A checkpoint's config file, validated (it is input). */
export async function readCheckpointConfig(vm: VmFolder, c: Checkpoint): Promise<VmConfig> {
  const path = await vm.realPath(c.config);
  let value: unknown;
  try {
    value = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new DiskchainError('MANIFEST_INVALID', `checkpoint config is not valid JSON (${e instanceof Error ? e.message : String(e)})`, { file: path, path: '$' });
  }
  return parseWith(VmConfigSchema, value, path);
}

/**
 * The manifest after applying `c`. With `saveAs`, Now becomes that checkpoint in the same commit (its
 * leaves frozen, nothing discarded), so "create checkpoint and apply" is one transaction.
 */
export function planApply(m: Manifest, c: Checkpoint, config: VmConfig, saveAs?: Checkpoint, saveAsActions?: Action[]): { plan: Plan; unnamed: Set<string>; discarded: DiskNode[] } {
  const newNodes: DiskNode[] = m.disks.map((d) => {
    const id = randomGuid();
    return { id, disk: d.id, file: layerFileName(d.stem, id, d.format), parent: c.disks[d.id]! };
  });
  const oldLeaves = saveAs ? new Set<string>() : new Set(Object.values(m.now.disks));
  const swapped: Manifest = {
    ...m,
    config,
    nodes: [...m.nodes.filter((n) => !oldLeaves.has(n.id)), ...newNodes],
    checkpoints: saveAs ? [...m.checkpoints, saveAs] : m.checkpoints,
    now: { parent: c.id, disks: Object.fromEntries(newNodes.map((n) => [n.disk, n.id])) },
  };
  const { manifest, dropped } = pruneUnnamedLeaves(swapped);
  const discarded = [...m.nodes.filter((n) => oldLeaves.has(n.id)), ...dropped];
  // Unnamed layers that lost a child may now have a single one left.
  const unnamed = new Set(discarded.map((n) => n.parent).filter((p): p is string => p !== null));
  const plan: Plan = {
    operation: 'apply',
    manifest,
    actions: [
      ...(saveAs ? (saveAsActions ?? [{ kind: 'json' as const, file: saveAs.config, value: m.config }]) : []),
      ...newNodes.map((n) => ({ kind: 'child' as const, file: n.file, parent: nodeById(m, n.parent!).file })),
    ],
    removes: discarded.map((n) => n.file),
    followUp: [...unnamed],
  };
  return { plan, unnamed, discarded };
}

export async function applyCheckpoint(vm: VmFolder, target: Checkpoint, options: ApplyOptions = {}): Promise<ApplyResult> {
  const command = options.command ?? 'checkpoint apply';
  const signal = options.signal ? { signal: options.signal } : {};
  const c = vm.manifest.checkpoints.find((x) => x.id === target.id)!;
  const config = await readCheckpointConfig(vm, c);
  // Hyper-V's "Create checkpoint and apply": Now's leaves become a checkpoint's, in the same commit
  // (a Saved VM's: a standard one, its saved state linked in, as create.ts does).
  const first = options.checkpointFirst ? await planCheckpointOf(vm, typeof options.checkpointFirst === 'string' ? { name: options.checkpointFirst } : {}) : undefined;
  const saveAs = first?.checkpoint;
  const { plan, discarded } = planApply(vm.manifest, c, config, saveAs, first?.plan.actions.filter((a) => a.kind !== 'child'));
  await forecastCheckpoint(vm, await virtualSizes(vm));
  const tx = await runPlan(vm, plan, { command, ...signal, ...(options.beforeCommit ? { beforeCommit: options.beforeCommit } : {}) });
  const { collapsed } = await settleFollowUp(tx, { command, ...signal, ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
  const m = vm.manifest;
  return {
    applied: { id: c.id, name: c.name },
    savedFirst: saveAs ? checkpointInfo(m, saveAs) : null,
    discarded: discarded.map((n) => n.file),
    now: { parent: c.id, disks: m.disks.map((d) => ({ id: d.id, node: m.now.disks[d.id]!, file: nodeById(m, m.now.disks[d.id]!).file })) },
    merged: collapsed,
  };
}
