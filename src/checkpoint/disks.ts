/**
 * The VM's disks as chains: a node's file opened with its parents, confined to the VM folder, and
 * checked against the disk graph (the files' own parent links must lead where vm.json says).
 */
import { realpath } from 'node:fs/promises';
import { DiskchainError } from '../io/errors.js';
import { openChain, openDisk } from '../chain/open-chain.js';
import type { DiskChain } from '../chain/disk-chain.js';
import type { VmFolder } from './folder.js';
import { chainOf } from './graph.js';

export interface OpenNodeOptions {
  writable?: boolean;
  /** Read-only: take and check no lock (a running VM's disk, read as qemu-img -U would; docs/locking.md). */
  forceShare?: boolean;
  /**
   * Accept a file chain that skips graph nodes (a collapse between its copy and its commit re-points
   * the child before vm.json drops the node). Default: the chains must match exactly.
   */
  allowSkips?: boolean;
}

/** Opens the chain of `nodeId` (read-only unless asked); MANIFEST_INVALID when the files disagree with the graph. */
export async function openNodeChain(vm: VmFolder, nodeId: string, options: OpenNodeOptions = {}): Promise<DiskChain> {
  const graph = chainOf(vm.manifest, nodeId);
  const leaf = await vm.realPath(graph[0]!.file);
  // A raw image has no signature to probe: the slot says what it is (an export with -O raw).
  const raw = vm.manifest.disks.find((d) => d.id === graph[0]!.disk)?.format === 'raw';
  const chain = await openChain(leaf, { writable: options.writable ?? false, allowedFolders: [vm.realFolder], ...(raw ? { format: 'raw' as const } : {}), ...(options.forceShare ? { forceShare: true } : {}) });
  try {
    const expected = await Promise.all(graph.map((n) => vm.realPath(n.file).catch(() => vm.path(n.file))));
    const actual = await Promise.all(chain.layers.map((l) => realpath(l.path)));
    const disagree = (): DiskchainError =>
      new DiskchainError('MANIFEST_INVALID', `the disk files disagree with vm.json: ${leaf} reads through ${actual.join(' -> ')}, but the manifest's chain is ${expected.join(' -> ')}`, { file: leaf, path: '$.nodes' });
    if (!options.allowSkips) {
      if (actual.length !== expected.length || actual.some((a, i) => a !== expected[i])) throw disagree();
    } else {
      // A subsequence with the same leaf and root.
      let j = 0;
      for (const a of actual) {
        while (j < expected.length && expected[j] !== a) j++;
        if (j === expected.length) throw disagree();
        j++;
      }
      if (actual[0] !== expected[0] || actual[actual.length - 1] !== expected[expected.length - 1]) throw disagree();
    }
    return chain;
  } catch (e) {
    await chain.close().catch(() => undefined);
    throw e;
  }
}

/** The virtual size of each disk (from Now's leaf). */
export async function virtualSizes(vm: VmFolder): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const d of vm.manifest.disks) {
    const disk = await openDisk(await vm.realPath(vm.manifest.nodes.find((n) => n.id === vm.manifest.now.disks[d.id])!.file), d.format === 'raw' ? { format: 'raw' } : {});
    out.set(d.id, disk.virtualSize);
    await disk.close();
  }
  return out;
}
