/**
 * Collapse: an unnamed node (a removed checkpoint's layer, kept while it had several children)
 * that is down to one child becomes one file with that child, as Hyper-V merges a deleted
 * checkpoint's .avhdx. The direction that copies less is chosen:
 *
 *   merge   the child's data into the node's file (ops/merge.ts, its journal and space check); the
 *           node's file survives; the child's own children, if any, are handed over to it;
 *   rebase  the node's data into the child's file (ops/rebase.ts), the child re-pointed at the
 *           node's parent; only when nothing derives from the child, and the node has a parent.
 *
 * Never into a file another child depends on: the node has one child by construction, and the merge
 * engine refuses (HAS_DEPENDENTS) if the folder says otherwise. A node with no child is deleted.
 *
 *   record (step copy) ──► copy ──► step copied ──► commit ──► finish
 *                          merge/rebase,          vm.json: the child's node   the victim file
 *                          resumable              now names the survivor      deleted
 *
 * Forward only: a crash in the copy resumes it (the merge journal, or rebase, which is idempotent);
 * the child reads the same at every instant, so the tree reads as before throughout. The merge
 * runs with `keep`, so no file vm.json names disappears before the commit; the step `copied` is
 * recorded (synchronously) when the merge reaches its removal phase, before its journal goes.
 */
import { realpath, stat } from 'node:fs/promises';
import { DiskChain } from '../chain/disk-chain.js';
import { openChain, openDisk } from '../chain/open-chain.js';
import { merge } from '../ops/merge.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { rebase } from '../ops/rebase.js';
import { ensureSpace, forecastGrowth } from '../ops/space.js';
import { DISKS_DIR, type VmFolder } from './folder.js';
import { childNodes, collapsibleNodes, nodeById, pruneUnnamedLeaves } from './graph.js';
import type { DiskNode, Manifest } from './manifest.js';
import { testPoint } from './test-points.js';
import { runPlan, Transaction, type Plan } from './transaction.js';

export interface CollapseForecast {
  node: string;
  child: string;
  direction: 'merge' | 'rebase';
  /** The file that is deleted once the data is in the survivor. */
  victim: string;
  survivor: string;
  onto: string | null;
  bytesToCopy: number;
  /** Upper bound of the survivor's growth. */
  bytesNeeded: number;
  /** The victim's bytes on disk less the survivor's growth: what the collapse gives back. */
  reclaimBytes: number;
}

export interface CollapseResult extends CollapseForecast {
  bytesCopied: number;
}

/** Bytes a file occupies on disk. */
export async function bytesOnDisk(path: string): Promise<number> {
  const s = await stat(path).catch(() => undefined);
  return s ? s.blocks * 512 : 0;
}

/** Measures both directions from the allocation maps (nothing is written) and picks the cheaper. */
export async function forecastCollapse(vm: VmFolder, m: Manifest, node: DiskNode, child: DiskNode, signal?: AbortSignal): Promise<CollapseForecast> {
  const nPath = await vm.realPath(node.file);
  const cPath = await vm.realPath(child.file);
  const n = await openDisk(nPath);
  try {
    const c = await openDisk(cPath);
    try {
      let childBytes = 0;
      let nodeBytes = 0;
      for await (const e of new DiskChain([c, n], []).mapWindows(signal)) {
        if (e.layer === 0) childBytes += e.length;
        else if (e.layer === 1) nodeBytes += e.length;
      }
      const canRebase = childNodes(m, child.id).length === 0 && node.parent !== null;
      const direction = canRebase && nodeBytes < childBytes ? 'rebase' : 'merge';
      const growth = direction === 'merge' ? await forecastGrowth(new DiskChain([c], []), n, signal) : await forecastGrowth(new DiskChain([n], []), c, signal);
      const victim = direction === 'merge' ? child.file : node.file;
      return {
        node: node.id,
        child: child.id,
        direction,
        victim,
        survivor: direction === 'merge' ? node.file : child.file,
        onto: direction === 'rebase' ? nodeById(m, node.parent!).file : null,
        bytesToCopy: direction === 'merge' ? childBytes : nodeBytes,
        bytesNeeded: growth.bytesNeeded,
        reclaimBytes: (await bytesOnDisk(await vm.realPath(victim))) - growth.bytesNeeded,
      };
    } finally {
      await c.close();
    }
  } finally {
    await n.close();
  }
}

/** The manifest after the collapse: the child's node keeps its id, names the survivor, and takes the node's parent. */
export function planCollapse(m: Manifest, f: CollapseForecast): Plan {
  const node = nodeById(m, f.node);
  const manifest: Manifest = {
    ...m,
    nodes: m.nodes.filter((x) => x.id !== f.node).map((x) => (x.id === f.child ? { ...x, file: f.survivor, parent: node.parent } : x)),
  };
  return { operation: 'collapse', manifest, actions: [], removes: [f.victim], collapse: { node: f.node, child: f.child, direction: f.direction, victim: f.victim, survivor: f.survivor, onto: f.onto } };
}

/** The copy step (resumable) then commit and finish. */
export async function runCollapse(tx: Transaction, options: LongOperationOptions): Promise<number> {
  const spec = tx.record.collapse;
  if (!spec) throw new Error('internal: not a collapse');
  let bytesCopied = 0;
  if (!tx.committed && tx.record.step === 'copy') {
    const vm = tx.vm;
    if (spec.direction === 'merge') {
      const child = vm.path(spec.victim);
      const result = await merge(child, {
        into: vm.path(spec.survivor),
        keep: true,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
        onPhase: (phase) => {
          testPoint(`collapse:merge-${phase}`);
          if (phase === 'remove' && tx.record.step === 'copy') {
            tx.record.step = 'copied';
            tx.saveSync();
          }
        },
      });
      bytesCopied = result.bytesCopied;
    } else {
      bytesCopied = await rebaseIfNeeded(vm, spec.survivor, spec.onto, options);
    }
    if ((tx.record.step as string) !== 'copied') await tx.setStep('copied');
    testPoint('collapse:copied');
  }
  await tx.commit();
  await tx.finish();
  return bytesCopied;
}

/** Rebase the survivor onto `onto` unless its file already names it (the rebase finished before a crash). */
async function rebaseIfNeeded(vm: VmFolder, survivor: string, onto: string | null, options: LongOperationOptions): Promise<number> {
  const path = vm.path(survivor);
  const chain = await openChain(path, { allowedFolders: [vm.realFolder] });
  const done = onto === null ? chain.layers.length === 1 : chain.layers.length > 1 && (await realpath(chain.layers[1]!.path)) === (await vm.realPath(onto));
  await chain.close();
  if (done) return 0;
  const result = await rebase(path, { ...(onto === null ? { standalone: true } : { onto: vm.path(onto) }), ...(options.signal ? { signal: options.signal } : {}), ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
  return result.bytesCopied;
}

/** Drops unnamed nodes nothing derives from (their files deleted after the commit). */
export async function pruneUnnamed(vm: VmFolder, command: string): Promise<string[]> {
  const { manifest, dropped } = pruneUnnamedLeaves(vm.manifest);
  if (dropped.length === 0) return [];
  await runPlan(vm, { operation: 'remove', manifest, actions: [], removes: dropped.map((n) => n.file) }, { command });
  return dropped.map((n) => n.file);
}

export interface CollapseAllOptions extends LongOperationOptions {
  command?: string;
  /** Only nodes of this set (default: every collapsible node). */
  only?: Set<string>;
}

/** Collapses every unnamed node that is down to one child, one transaction each. */
export async function collapseAll(vm: VmFolder, options: CollapseAllOptions = {}): Promise<{ collapsed: CollapseResult[]; deleted: string[] }> {
  const command = options.command ?? 'collapse';
  const deleted = await pruneUnnamed(vm, command);
  const collapsed: CollapseResult[] = [];
  for (;;) {
    const next = collapsibleNodes(vm.manifest).find((c) => !options.only || options.only.has(c.node.id));
    if (!next) break;
    const f = await forecastCollapse(vm, vm.manifest, next.node, next.child, options.signal);
    await ensureSpace(vm.path(`${DISKS_DIR}/x`), f.bytesNeeded, `merging ${f.victim} into ${f.survivor}`);
    const tx = await Transaction.begin(vm, planCollapse(vm.manifest, f), command);
    const bytesCopied = await runCollapse(tx, options);
    collapsed.push({ ...f, bytesCopied });
  }
  return { collapsed, deleted };
}

/**
 * After a committed transaction that left unnamed nodes: merge those down to one child, then drop its
 * record. The record goes even when a merge fails (no space, cancelled): the tree is committed and
 * reads correctly; a merge that had begun keeps its own record and resumes with the next command, one
 * that had not is left to `vm check --repair` (the layer is still unnamed with one child).
 */
export async function settleFollowUp(tx: Transaction, options: CollapseAllOptions = {}): Promise<{ collapsed: CollapseResult[]; deleted: string[] }> {
  try {
    return tx.record.followUp.length > 0 ? await collapseAll(tx.vm, { ...options, only: new Set(tx.record.followUp) }) : { collapsed: [], deleted: [] };
  } finally {
    await tx.drop();
  }
}

/** The space a set of collapses may take at most: the sum of their survivors' growth. */
export function collapsesBytesNeeded(forecasts: CollapseForecast[]): number {
  return forecasts.reduce((s, f) => s + f.bytesNeeded, 0);
}

/** Refuses early when a set of collapses does not fit (the removal forecasts its merges). */
export async function ensureCollapsesFit(vm: VmFolder, forecasts: CollapseForecast[], what: string): Promise<void> {
  const needed = collapsesBytesNeeded(forecasts);
  if (needed > 0) await ensureSpace(vm.path(`${DISKS_DIR}/x`), needed, what);
}
