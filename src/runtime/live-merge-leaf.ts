/**
 * Merge of Now's leaf into its parent while the guest writes the leaf: the direction the engine picks
 * (collapse.ts) when the leaf holds more than its parent, or the parent is a base disk. The served
 * chain is [leaf, node, ...]; at the end the node is Now's leaf and the old leaf is deleted.
 *
 *   link     the leaf learns the DataWriteGuid the node will take (parent_linkage2, MS-VHDX §2.6.2.6),
 *            through its served handle, so the chain stays linked at every instant
 *   mirror   the export's backend mirrors: each guest change lands in the leaf, then in the node
 *            (opened writable with that DataWriteGuid), both under the export's write gate
 *   copy     the leaf's own ranges into the node, a piece at a time, each piece one change through
 *            the write gate: a guest write to those blocks waits for it, and, mirrored, lands after it
 *            (guest writes win); the guest reads the leaf's chain throughout, so its view never changes
 *   switch   requests drained, the node flushed, step copied, vm.json committed (the leaf's node names
 *            the node's file), the export swapped to the node's chain (ServedDisks.promoteParent)
 *   finish   (the collapse's) the old leaf deleted
 *
 * A crash before the commit leaves Now on the leaf, which holds every write: recovery merges it into
 * the node again with the engine (the node may hold any part of it already: the same data). After the
 * step `copied` the node holds everything (flushed first), and recovery commits. A cancel (or failure)
 * before the switch puts the plain backend back and closes the node; the node's new ranges are ones
 * the leaf hides, so nothing reads differently.
 */
import { realpath } from 'node:fs/promises';
import { DiskChain } from '../chain/disk-chain.js';
import { linkTo } from '../chain/link-paths.js';
import { openDisk } from '../chain/open-disk.js';
import { DiskchainError, throwIfAborted } from '../io/errors.js';
import { randomGuid } from '../io/guid.js';
import type { CollapseForecast } from '../checkpoint/collapse.js';
import { testHold, testPoint } from '../checkpoint/test-points.js';
import type { Transaction } from '../checkpoint/transaction.js';
import type { VirtualDisk } from '../formats/types.js';
import { ChainBackend } from '../server/backend.js';
import type { WorkerInternals } from './worker.js';

/** Bytes per piece copied under the write gate: a guest write waits for one piece at most. */
export const LIVE_PIECE = 1024 * 1024;

export interface LiveCopyOptions {
  signal: AbortSignal;
  onProgress: (done: number) => void;
}

/** The served leaf's chain, with every change also made in `mirror` (the node, over the same layers below). */
class MirrorBackend extends ChainBackend {
  constructor(
    chain: DiskChain,
    private readonly mirror: DiskChain,
  ) {
    super(chain);
  }
  override async write(data: Uint8Array, offset: number): Promise<void> {
    await super.write(data, offset);
    await this.mirror.write(data, offset);
  }
  override async writeZeroes(offset: number, length: number, mayUnmap: boolean): Promise<void> {
    await super.writeZeroes(offset, length, mayUnmap);
    await this.mirror.writeZeroes(offset, length, { mayUnmap });
  }
  override async flush(): Promise<void> {
    await super.flush();
    await this.mirror.leaf.flush();
  }
}

/** Copies the leaf's own ranges of [offset, offset+length) into `into` (called under the write gate). */
async function copyOwnRanges(leaf: VirtualDisk, into: DiskChain, offset: number, length: number, buffer: Uint8Array): Promise<number> {
  let n = 0;
  for (const t of await leaf.map(offset, length)) {
    if (t.state === 'transparent') continue;
    if (t.state === 'zero') await into.writeZeroes(t.offset, t.length, { mayUnmap: true });
    else {
      const data = buffer.subarray(0, t.length);
      await leaf.read(data, t.offset);
      await into.write(data, t.offset);
    }
    n += t.length;
  }
  return n;
}

/**
 * Runs the collapse `tx` (direction merge, its child Now's leaf of `diskId`) up to its commit; calls
 * `onSwitch` once the switch has begun (a failure after it must end the VM). Returns the bytes copied.
 */
export async function mergeLeafIntoParent(w: WorkerInternals, tx: Transaction, f: CollapseForecast, diskId: string, o: LiveCopyOptions, onSwitch: () => void): Promise<number> {
  let served = w.disks.chainOf(diskId);
  const nodePath = await w.vm.realPath(f.survivor);
  if (!served.layers[1] || (await realpath(served.layers[1].path)) !== nodePath || (await realpath(served.leaf.path)) !== (await w.vm.realPath(f.victim))) {
    throw new DiskchainError('MANIFEST_INVALID', `the served chain of ${diskId} is not ${f.victim} → ${f.survivor}`, { file: w.vm.path(f.victim), path: '$.nodes' });
  }
  const session = served.layers[1].format === 'vhdx' ? randomGuid() : undefined;
  if (session) {
    await w.disks.relinkLeaf(diskId, async (leaf, chain) => {
      if (!leaf.setParent) throw new DiskchainError('UNSUPPORTED', `cannot record the merge in ${leaf.path}`, { file: leaf.path });
      const node = chain.layers[1]!;
      await leaf.setParent(linkTo(leaf.path, node.path, node.identity(), session));
    });
    served = w.disks.chainOf(diskId);
  }
  const node = await openDisk(nodePath, { writable: true, ...(session ? { dataWriteGuid: session } : {}) });
  const nodeChain = new DiskChain([node, ...served.layers.slice(2)], served.links.slice(1));
  let switching = false;
  try {
    await w.disks.swapBackend(diskId, new MirrorBackend(served, nodeChain));
    const buffer = new Uint8Array(LIVE_PIECE);
    let copied = 0;
    let scanned = 0;
    for await (const e of new DiskChain([served.leaf], []).mapWindows(o.signal)) {
      if (e.state === 'absent') continue;
      for (let at = e.offset; at < e.offset + e.length; at += LIVE_PIECE) {
        throwIfAborted(o.signal);
        const length = Math.min(LIVE_PIECE, e.offset + e.length - at);
        copied += await w.disks.changeLeaf(diskId, at, length, (leaf) => copyOwnRanges(leaf, nodeChain, at, length, buffer));
        scanned += length;
        o.onProgress(scanned);
        await testHold('live-remove:piece');
      }
    }
    const exported = w.disks.exports.get(diskId)!;
    await exported.pause();
    switching = true;
    onSwitch();
    await exported.backend.flush();
    await tx.setStep('copied');
    testPoint('live-remove:leaf-copied');
    await tx.commit();
    await w.disks.promoteParent(diskId, nodeChain);
    return copied;
  } catch (e) {
    if (!switching) {
      await w.disks.swapBackend(diskId, new ChainBackend(served)).catch(() => undefined);
      // The node may carry the session's DataWriteGuid now: the leaf names it as its primary link
      // again, so a later merge finds the leaf as the node's child by that identity.
      const identity = node.identity();
      await node.close().catch(() => undefined);
      await w.disks
        .relinkLeaf(diskId, async (leaf) => {
          if (leaf.setParent) await leaf.setParent(linkTo(leaf.path, nodePath, identity));
        })
        .catch(() => undefined);
    }
    throw e;
  }
}
