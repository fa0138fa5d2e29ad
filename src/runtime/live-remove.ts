/**
 * Remove-VMSnapshot of a running VM, inside its worker: Hyper-V merges a deleted checkpoint's
 * .avhdx while the VM runs. The engine's removal (checkpoint/remove.ts), with the merges that touch
 * Now's chain done against the disks the worker serves, while the guest keeps running and writing:
 *
 *   plan, forecast       the engine's: the tree without the checkpoint, the merges that follow, their
 *                        directions (collapse.ts: the one that copies less); NO_SPACE before anything
 *   commit (tree)        the engine's transaction: the checkpoint gone, its layers unnamed
 *   collapse × n         each unnamed layer down to one child, one collapse transaction each:
 *     off Now's chain    neither file is served: the engine's collapse as it is
 *     merge below Now    the child is a layer under Now's leaf (a middle checkpoint): the engine's
 *                        merge (its journal, resumable) of the child into the node; the guest never
 *                        writes either file and reads the same at every instant (the child hides
 *                        what the node receives). Its handover re-points Now's leaf through the
 *                        served handle (ServedDisks.relinkLeaf: requests drained, the link
 *                        rewritten, the chain below reopened and swapped in)
 *     rebase into Now    the child is Now's leaf: the node's data is copied into the leaf a piece at a
 *                        time through the export's write gate, only where the leaf holds nothing
 *                        when the piece runs: a guest write that came first is kept, one that comes
 *                        later waits and lands over it (guest writes win); then the leaf is re-pointed
 *                        at the node's parent through the served handle, and the chain swapped
 *     merge of Now       Now's leaf into its parent, the guest's changes mirrored into the parent
 *                        meanwhile, then the export switched to the parent (live-merge-leaf.ts)
 *     then               step copied → commit (vm.json) → finish (the merged layer's file deleted)
 *   drop                 the removal's record
 *
 * Progress: the control op `remove-progress` (polled by the library); cancel: `remove-cancel`. A
 * cancel (or any failure) during a copy settles the collapse in the worker: a merge in its copy phase
 * is abandoned (merge-abandon.ts), the rebase's copied pieces stay (they read as the node did), the
 * collapse's record is dropped. The removal stands (committed first), the layer stays unnamed with one
 * child and reads the same; the next removal, `vm check --repair` or a restart merges it. A failure
 * after the copy, while the files are being re-linked, turns the VM off so that recovery finishes it.
 * A crash (kill -9 of the worker) leaves the collapse's record and the merge's journal: the next start
 * (its recovery) or `vm check --repair` finishes the collapse offline with the engine.
 */
import { realpath } from 'node:fs/promises';
import { DiskChain } from '../chain/disk-chain.js';
import { sameIdentity } from '../chain/identity.js';
import { linkTo } from '../chain/link-paths.js';
import { openDisk } from '../chain/open-disk.js';
import { DiskchainError, throwIfAborted } from '../io/errors.js';
import { abandonMerge } from '../ops/merge-abandon.js';
import { findPendingMerge, merge } from '../ops/merge.js';
import { rebase } from '../ops/rebase.js';
import { ensureCollapsesFit, forecastCollapse, planCollapse, pruneUnnamed, type CollapseForecast, type CollapseResult } from '../checkpoint/collapse.js';
import { DISKS_DIR } from '../checkpoint/folder.js';
import { collapsibleNodes } from '../checkpoint/graph.js';
import type { Checkpoint } from '../checkpoint/manifest.js';
import { planRemoval, type PlannedRemoval, type RemoveResult } from '../checkpoint/remove.js';
import { resolveCheckpoint } from '../checkpoint/resolve.js';
import { testHold, testPoint } from '../checkpoint/test-points.js';
import { runPlan, Transaction } from '../checkpoint/transaction.js';
import { ensureSpace } from '../ops/space.js';
import { LIVE_PIECE, mergeLeafIntoParent, type LiveCopyOptions } from './live-merge-leaf.js';
import type { VmWorker, WorkerInternals } from './worker.js';

/** Where a collapse's child is, seen from the served disks. */
type Placement = { kind: 'off' } | { kind: 'below'; diskId: string } | { kind: 'leaf'; diskId: string };

export interface LiveRemoveProgress {
  /** The collapse running ("merge <victim> into <survivor>"), or the phase. */
  step: string;
  done: number;
  total: number;
  /** A cancel was asked for: the removal stops at the next piece. */
  cancelling: boolean;
}

interface Running {
  abort: AbortController;
  progress: LiveRemoveProgress;
}
const running = new WeakMap<WorkerInternals, Running>();

/** Adds remove (exclusive, like every operation), remove-progress and remove-cancel (answered at once). */
export function registerLiveRemove(worker: VmWorker): void {
  worker.register('remove', (w, args) => {
    if (typeof args.checkpoint !== 'string') throw new DiskchainError('INVALID_ARGUMENT', 'remove names a checkpoint');
    return liveRemove(w, args.checkpoint, { subtree: args.subtree === true });
  });
  worker.register('remove-progress', (w) => Promise.resolve(running.get(w)?.progress ?? null), { exclusive: false });
  worker.register(
    'remove-cancel',
    (w) => {
      const r = running.get(w);
      if (r) r.progress.cancelling = true;
      r?.abort.abort(new DiskchainError('ABORTED', 'the removal was cancelled'));
      return Promise.resolve({ cancelled: r !== undefined });
    },
    { exclusive: false },
  );
}

export async function liveRemove(w: WorkerInternals, ref: string, options: { subtree?: boolean; signal?: AbortSignal } = {}): Promise<RemoveResult> {
  requireRunning(w);
  return trackRemoval(w, options.signal, async (signal, progress) => {
    const vm = w.vm;
    const checkpoint = resolveCheckpoint(vm.manifest, ref);
    const planned = await planLiveRemoval(w, checkpoint, { subtree: options.subtree ?? false, signal });
    const tx = await runPlan(vm, planned.plan, { command: COMMAND, signal });
    return collapseRemoved(w, tx, planned, { signal, progress });
  });
}

/** A live removal needs the guest Running or Paused (the worker serves its disks). */
export function requireRunning(w: WorkerInternals): void {
  if (!['Running', 'Paused'].includes(w.state)) throw new DiskchainError('VM_STATE', `the VM is ${w.state}; removing a checkpoint of a running VM needs it Running or Paused`, { state: w.state });
}

/** Runs a removal's part in the worker with its progress (remove-progress) and cancel (remove-cancel). */
export async function trackRemoval<T>(w: WorkerInternals, outer: AbortSignal | undefined, fn: (signal: AbortSignal, progress: LiveRemoveProgress) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  const signal = outer ? AbortSignal.any([outer, abort.signal]) : abort.signal;
  const state: Running = { abort, progress: { step: 'plan', done: 0, total: 0, cancelling: false } };
  running.set(w, state);
  try {
    return await fn(signal, state.progress);
  } finally {
    running.delete(w);
  }
}

export const COMMAND = 'checkpoint remove (running)';

/** The engine's plan of the removal and its merges' forecast; NO_SPACE before anything is written. */
export async function planLiveRemoval(w: WorkerInternals, checkpoint: Checkpoint, o: { subtree: boolean; signal?: AbortSignal }): Promise<PlannedRemoval> {
  const planned = await planRemoval(w.vm, checkpoint, { subtree: o.subtree, ...(o.signal ? { signal: o.signal } : {}) });
  await ensureCollapsesFit(w.vm, planned.forecasts, `removing "${checkpoint.name}" (its layers merge with their only child)`);
  return planned;
}

/** After the removal's commit (`tx`): every layer down to one child merged live, then the record dropped. */
export async function collapseRemoved(w: WorkerInternals, tx: Transaction, planned: PlannedRemoval, o: { signal: AbortSignal; progress: LiveRemoveProgress }): Promise<RemoveResult> {
  const vm = w.vm;
  o.progress.total = planned.forecasts.reduce((s, f) => s + f.bytesToCopy, 0);
  const merged: CollapseResult[] = [];
  const deleted = [...planned.deleted];
  try {
    deleted.push(...(await pruneUnnamed(vm, COMMAND)));
    let before = 0;
    for (;;) {
      // This removal's layers, and any a cancelled one left unnamed: every layer down to one child.
      const next = collapsibleNodes(vm.manifest)[0];
      if (!next) break;
      await testHold('live-remove:collapse');
      const f = await forecastCollapse(vm, vm.manifest, next.node, next.child, o.signal);
      await ensureSpace(vm.path(`${DISKS_DIR}/x`), f.bytesNeeded, `merging ${f.victim} into ${f.survivor}`);
      o.progress.step = `${f.direction} ${f.victim} ${f.direction === 'merge' ? 'into' : 'with'} ${f.survivor}`;
      o.progress.total = Math.max(o.progress.total, before + f.bytesToCopy);
      const onProgress = (done: number): void => {
        o.progress.done = before + Math.min(done, f.bytesToCopy);
        testPoint('live-remove:progress');
      };
      const bytesCopied = await runLiveCollapse(w, f, { signal: o.signal, onProgress });
      before += f.bytesToCopy;
      o.progress.done = before;
      merged.push({ ...f, bytesCopied });
    }
  } finally {
    await tx.drop();
  }
  const kept = vm.manifest.nodes.filter((n) => planned.unnamed.has(n.id)).map((n) => n.file);
  return { removed: planned.targets.map((c) => ({ id: c.id, name: c.name })), deleted, merged, kept };
}

/** Off Now's chains, under Now's leaf, or Now's leaf itself: where the collapse's child is served. */
async function place(w: WorkerInternals, f: CollapseForecast): Promise<Placement> {
  const child = f.direction === 'merge' ? f.victim : f.survivor;
  const at = await w.disks.locate(await w.vm.realPath(child));
  if (!at) return { kind: 'off' };
  return at.layer === 0 ? { kind: 'leaf', diskId: at.diskId } : { kind: 'below', diskId: at.diskId };
}

type CopyOptions = LiveCopyOptions;

/** One collapse transaction: the copy (by placement), step copied, commit, finish; settled in the worker on failure. */
async function runLiveCollapse(w: WorkerInternals, f: CollapseForecast, o: CopyOptions): Promise<number> {
  const vm = w.vm;
  const placement = await place(w, f);
  const tx = await Transaction.begin(vm, planCollapse(vm.manifest, f), COMMAND);
  let copied = false;
  let bytes = 0;
  try {
    if (placement.kind === 'leaf' && f.direction === 'merge') bytes = await mergeLeafIntoParent(w, tx, f, placement.diskId, o, () => (copied = true));
    else if (placement.kind === 'leaf') bytes = await rebaseIntoLeaf(w, f, placement.diskId, o, () => (copied = true));
    else if (f.direction === 'merge') {
      let leafHandedOver = false;
      bytes = await mergeInto(w, tx, f, o, placement.kind === 'below', () => (copied = true), () => (leafHandedOver = true));
      // The merge re-pointed a served layer under the leaf itself: the served chain below the leaf is opened again.
      if (placement.kind === 'below' && !leafHandedOver) await w.disks.relinkLeaf(placement.diskId, async () => undefined);
    } else bytes = (await rebase(vm.path(f.survivor), { onto: vm.path(f.onto!), signal: o.signal, onProgress: (done) => o.onProgress(done) })).bytesCopied;
    if (tx.record.step === 'copy') await tx.setStep('copied');
    testPoint('collapse:copied');
  } catch (e) {
    if (copied) {
      // The files are between two links: recovery (offline, the engine's) finishes it.
      await w.end('Off', `removing a checkpoint failed while its layers were re-linked, the VM was turned off (vm check --repair finishes it): ${e instanceof Error ? e.message : String(e)}`);
      throw e;
    }
    await settleCancelled(w, tx, f);
    throw e;
  }
  if (!tx.committed) await tx.commit();
  await tx.finish();
  return bytes;
}

/** The copy stopped before anything was re-linked: the merge's journal abandoned, the collapse's record dropped. */
async function settleCancelled(w: WorkerInternals, tx: Transaction, f: CollapseForecast): Promise<void> {
  try {
    if (f.direction === 'merge') {
      const child = w.vm.path(f.victim);
      if (await findPendingMerge(child, { into: w.vm.path(f.survivor) })) {
        await abandonMerge(child, { into: w.vm.path(f.survivor) });
        await relinkToCurrent(child, w.vm.path(f.survivor));
      }
    }
    await tx.rollback();
  } catch (e) {
    // A record left behind while the VM runs on could meet later commits: the VM goes off instead,
    // and recovery (offline) finishes the collapse.
    await w.end('Off', `a cancelled checkpoint removal could not be settled, the VM was turned off (vm check --repair finishes it): ${e instanceof Error ? e.message : String(e)}`);
  }
}

/**
 * After an abandoned merge the child names the node by parent_linkage2 only (the node took the
 * session's DataWriteGuid): its primary link is set to the node's identity again, so that a later
 * merge of the node finds the child as its dependent by that identity. The served handles keep
 * reading (only the child's metadata changes).
 */
async function relinkToCurrent(childPath: string, nodePath: string): Promise<void> {
  const node = await openDisk(nodePath);
  const identity = node.identity();
  await node.close();
  const child = await openDisk(childPath, { writable: true });
  try {
    if (child.parent && child.setParent && !sameIdentity(child.parent.expected, identity)) await child.setParent(linkTo(child.path, nodePath, identity));
  } finally {
    await child.close();
  }
}

/**
 * The engine's merge of the child into the node (kept: the commit's finish deletes it). The served
 * leaf, when it is the child's child, is handed over through its served handle; the merge's plan
 * reads the leaf (who depends on what), so its requests wait while the merge plans.
 */
async function mergeInto(w: WorkerInternals, tx: Transaction, f: CollapseForecast, o: CopyOptions, served: boolean, onCopied: () => void, onLeafHandedOver: () => void): Promise<number> {
  const paused = served ? [...w.disks.exports.values()] : [];
  for (const e of paused) {
    await e.pause();
    await e.backend.flush();
  }
  let resumed = false;
  const resume = (): void => {
    if (resumed) return;
    resumed = true;
    for (const e of paused) e.resume();
  };
  try {
    const result = await merge(w.vm.path(f.victim), {
      into: w.vm.path(f.survivor),
      keep: true,
      signal: o.signal,
      onProgress: (done) => o.onProgress(done),
      onPhase: (phase) => {
        resume();
        testPoint(`collapse:merge-${phase}`);
        if (phase === 'handover') onCopied();
        if (phase === 'remove' && tx.record.step === 'copy') {
          tx.record.step = 'copied';
          tx.saveSync();
        }
      },
      withOpenDependent: async (path, handOver) => {
        const at = await w.disks.locate(await realpath(path));
        if (!at || at.layer !== 0) return false;
        await w.disks.relinkLeaf(at.diskId, (leaf) => handOver(leaf));
        onLeafHandedOver();
        return true;
      },
    });
    return result.bytesCopied;
  } finally {
    resume();
  }
}

/**
 * The node's data into Now's leaf (the served chain is [leaf, node, onto, ...]): each piece is one
 * change through the export's write gate, written only where the leaf holds nothing at that moment;
 * then the leaf names the node's parent. Idempotent: recovery's offline rebase finishes it after a crash.
 */
async function rebaseIntoLeaf(w: WorkerInternals, f: CollapseForecast, diskId: string, o: CopyOptions, onCopied: () => void): Promise<number> {
  const served = w.disks.chainOf(diskId);
  const node = served.layers[1];
  const onto = served.layers[2];
  if (!node || !onto || (await realpath(node.path)) !== (await w.vm.realPath(f.victim)) || f.onto === null || (await realpath(onto.path)) !== (await w.vm.realPath(f.onto))) {
    throw new DiskchainError('MANIFEST_INVALID', `the served chain of ${diskId} is not ${f.survivor} → ${f.victim} → ${f.onto}`, { file: w.vm.path(f.survivor), path: '$.nodes' });
  }
  const buffer = new Uint8Array(LIVE_PIECE);
  let copied = 0;
  let scanned = 0;
  for await (const e of new DiskChain([node], []).mapWindows(o.signal)) {
    if (e.state === 'absent') continue;
    for (let at = e.offset; at < e.offset + e.length; at += LIVE_PIECE) {
      throwIfAborted(o.signal);
      const length = Math.min(LIVE_PIECE, e.offset + e.length - at);
      copied += await w.disks.changeLeaf(diskId, at, length, async (leaf) => {
        let n = 0;
        for (const t of await leaf.map(at, length)) {
          if (t.state !== 'transparent') continue;
          const data = buffer.subarray(0, t.length);
          if (e.state === 'data') await node.read(data, t.offset);
          else data.fill(0);
          await leaf.write(data, t.offset);
          n += t.length;
        }
        return n;
      });
      scanned += length;
      o.onProgress(scanned);
      await testHold('live-remove:piece');
    }
  }
  onCopied();
  await w.disks.relinkLeaf(diskId, async (leaf, chain) => {
    if (!leaf.setParent) throw new DiskchainError('UNSUPPORTED', `cannot re-point ${leaf.path}`, { file: leaf.path });
    const parent = chain.layers[2]!;
    await leaf.setParent(linkTo(leaf.path, parent.path, parent.identity()));
  });
  return copied;
}
