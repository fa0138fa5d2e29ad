/**
 * The VM's disks as the worker serves them to QEMU: one NBD server on `<vm>/run/nbd.sock`, one
 * export per disk named by its id, each over Now's chain (the leaf writable). While served, Now's
 * leaves are locked for writing and their parents for reading (io/lock.ts), so neither another
 * diskchain nor a QEMU opens them behind the worker's back.
 *
 * After a checkpoint's commit, `switchToNow()` puts each export on Now's new chain (NbdExport.swap:
 * requests in flight finish on the old chain, which is flushed and closed; later ones go to the new
 * leaf). The guest is paused by then (QMP stop drained its writes), so nothing is in flight anyway.
 */
import { chmod, realpath } from 'node:fs/promises';
import { DiskChain, type ChainLink } from '../chain/disk-chain.js';
import { openChain } from '../chain/open-chain.js';
import { openDisk } from '../chain/open-disk.js';
import { resolveParent } from '../chain/resolve-parent.js';
import type { LinkIdentity, VirtualDisk } from '../formats/types.js';
import { DiskchainError } from '../io/errors.js';
import { openNodeChain } from '../checkpoint/disks.js';
import type { VmFolder } from '../checkpoint/folder.js';
import { lockFile, type FileLock } from '../io/lock.js';
import { ChainBackend, type ExportBackend } from '../server/backend.js';
import { NbdExport } from '../server/export.js';
import { NbdServer } from '../server/server.js';

interface ServedDisk {
  id: string;
  export: NbdExport;
  locks: FileLock[];
}

/** The chain a disk's export serves now (its backend is always a ChainBackend). */
function servedChain(d: ServedDisk): DiskChain {
  return (d.export.backend as ChainBackend).chain;
}

/** Opens Now's chain of one disk writable, with its locks (leaf write, parents read). */
async function openNow(vm: VmFolder, diskId: string): Promise<{ chain: DiskChain; locks: FileLock[] }> {
  const locks: FileLock[] = [];
  const node = vm.manifest.nodes.find((n) => n.id === vm.manifest.now.disks[diskId])!;
  try {
    locks.push(await lockFile(await vm.realPath(node.file), 'write', { command: 'vm worker' }));
    const chain = await openNodeChain(vm, node.id, { writable: true, allowSkips: true });
    try {
      for (const layer of chain.layers.slice(1)) locks.push(await lockFile(layer.path, 'read', { command: 'vm worker' }));
    } catch (e) {
      await chain.close().catch(() => undefined);
      throw e;
    }
    return { chain, locks };
  } catch (e) {
    for (const l of locks.reverse()) await l.release().catch(() => undefined);
    throw e;
  }
}

export class ServedDisks {
  private closed = false;
  private constructor(
    private readonly vm: VmFolder,
    private readonly server: NbdServer,
    private readonly disks: ServedDisk[],
  ) {}

  static async open(vm: VmFolder, socket: string, log?: (message: string) => void): Promise<ServedDisks> {
    const disks: ServedDisk[] = [];
    try {
      for (const d of vm.manifest.disks) {
        const { chain, locks } = await openNow(vm, d.id);
        disks.push({ id: d.id, export: new NbdExport(new ChainBackend(chain), { name: d.id, description: `${vm.manifest.name} ${d.id}` }), locks });
      }
      const server = new NbdServer({ exports: disks.map((d) => d.export), ...(log ? { log } : {}) });
      await server.listen({ socket });
      await chmod(socket, 0o600);
      return new ServedDisks(vm, server, disks);
    } catch (e) {
      for (const d of disks) await closeDisk(d).catch(() => undefined);
      throw e;
    }
  }

  /** The exports, by disk id. */
  get exports(): Map<string, NbdExport> {
    return new Map(this.disks.map((d) => [d.id, d.export]));
  }

  /** The identity each served leaf has now (a VHDX leaf's DataWriteGuid changes at its session's first write). */
  leafIdentities(): Map<string, LinkIdentity> {
    return new Map(this.disks.map((d) => [d.id, servedChain(d).leaf.identity()]));
  }

  /**
   * Puts every export on Now's chain as vm.json now says (after a checkpoint's commit). When Now's
   * new leaf is a child of the served leaf (a checkpoint), only the child and its parent are opened
   * (the parent read-only, its identity checked) and the layers below are kept: the guest's pause
   * does not grow with the chain's depth. Otherwise (apply) the whole chain is opened again.
   */
  async switchToNow(): Promise<void> {
    // The disks are independent and the guest waits: all of them at once. Each one ends switched or
    // as it was; the first failure is thrown once every disk has settled.
    const settled = await Promise.allSettled(this.disks.map((d) => this.switchDisk(d)));
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  private async switchDisk(d: ServedDisk): Promise<void> {
    const old = servedChain(d);
    const fast = await this.openChildOf(d, old);
    if (fast) {
      await d.export.swap(new ChainBackend(fast.chain));
      const oldLeafLock = d.locks[0]!;
      d.locks = [...fast.locks, ...d.locks.slice(1)];
      await old.leaf.close();
      await oldLeafLock.release();
      return;
    }
    const { chain, locks } = await openNow(this.vm, d.id);
    const previous = await d.export.swap(new ChainBackend(chain));
    const oldLocks = d.locks;
    d.locks = locks;
    await previous.close();
    for (const l of oldLocks.reverse()) await l.release();
  }

  /** Now's leaf of disk `d` opened over the served chain, when it is a child of the served leaf. */
  private async openChildOf(d: ServedDisk, old: DiskChain): Promise<{ chain: DiskChain; locks: FileLock[] } | undefined> {
    const m = this.vm.manifest;
    const node = m.nodes.find((n) => n.id === m.now.disks[d.id])!;
    const parentNode = node.parent === null ? undefined : m.nodes.find((n) => n.id === node.parent);
    if (!parentNode || (await this.vm.realPath(parentNode.file)) !== (await realpath(old.leaf.path))) return undefined;
    const childPath = await this.vm.realPath(node.file);
    const locks: FileLock[] = [];
    let child: VirtualDisk | undefined;
    let parent: VirtualDisk | undefined;
    try {
      locks.push(await lockFile(childPath, 'write', { command: 'vm worker' }));
      child = await openDisk(childPath, { writable: true });
      const found = await resolveParent(child, { allowedFolders: [this.vm.realFolder], chainRealPaths: new Set([childPath]), remembered: false });
      parent = found.disk;
      if (found.realPath !== (await realpath(old.leaf.path)) || !found.identityMatches) {
        throw new DiskchainError('MANIFEST_INVALID', `${childPath} does not lead to the served leaf ${old.leaf.path}`, { file: childPath, path: '$.nodes' });
      }
      locks.push(await lockFile(found.realPath, 'read', { command: 'vm worker' }));
      const link: ChainLink = { parentPath: found.path, attempts: found.attempts, identityMatches: found.identityMatches, foundBy: found.foundBy };
      return { chain: new DiskChain([child, parent, ...old.layers.slice(1)], [link, ...old.links]), locks };
    } catch (e) {
      await child?.close().catch(() => undefined);
      await parent?.close().catch(() => undefined);
      for (const l of locks.reverse()) await l.release().catch(() => undefined);
      throw e;
    }
  }

  /** Where a file is in the served chains: the disk, and its layer (0: the leaf Now writes). */
  async locate(realPath: string): Promise<{ diskId: string; layer: number } | undefined> {
    for (const d of this.disks) {
      const layers = servedChain(d).layers;
      for (let i = 0; i < layers.length; i++) if ((await realpath(layers[i]!.path)) === realPath) return { diskId: d.id, layer: i };
    }
    return undefined;
  }

  /** The chain served for a disk now. */
  chainOf(diskId: string): DiskChain {
    return servedChain(this.disk(diskId));
  }

  /**
   * Runs `fn` on the served leaf as one change of [offset, offset+length) through the export's write
   * gate: the guest's writes wait meanwhile, and those that entered the gate before have landed.
   */
  changeLeaf<T>(diskId: string, offset: number, length: number, fn: (leaf: VirtualDisk) => Promise<T>): Promise<T> {
    const d = this.disk(diskId);
    return d.export.gate.change(offset, length, () => fn(servedChain(d).leaf));
  }

  /**
   * Changes a served leaf's parent link in place (a merge below it hands it over, or its parent's
   * data was copied into it): with the export's requests drained and the leaf flushed, `change`
   * rewrites the link through the served handle (no second handle ever writes the leaf), then the
   * chain below is opened as the leaf now names it and swapped in; the old layers below are closed
   * and their locks dropped. The leaf stays open throughout.
   */
  async relinkLeaf(diskId: string, change: (leaf: VirtualDisk, served: DiskChain) => Promise<void>): Promise<void> {
    const d = this.disk(diskId);
    const old = servedChain(d);
    const leaf = old.leaf;
    const locks: FileLock[] = [];
    let below: DiskChain | undefined;
    await d.export.pause();
    try {
      await leaf.flush();
      await change(leaf, old);
      const leafReal = await realpath(leaf.path);
      const found = await resolveParent(leaf, { allowedFolders: [this.vm.realFolder], chainRealPaths: new Set([leafReal]), remembered: false });
      await found.disk.close();
      if (!found.identityMatches) throw new DiskchainError('PARENT_MISMATCH', `${leaf.path} does not match its new parent ${found.realPath}`, { file: leaf.path });
      below = await openChain(found.realPath, { allowedFolders: [this.vm.realFolder] });
      for (const layer of below.layers) locks.push(await lockFile(layer.path, 'read', { command: 'vm worker' }));
      const link: ChainLink = { parentPath: found.path, attempts: found.attempts, identityMatches: found.identityMatches, foundBy: found.foundBy };
      await d.export.swap(new ChainBackend(new DiskChain([leaf, ...below.layers], [link, ...below.links])));
    } catch (e) {
      d.export.resume();
      for (const l of below?.layers ?? []) await l.close().catch(() => undefined);
      for (const l of locks.reverse()) await l.release().catch(() => undefined);
      throw e;
    }
    for (const l of old.layers.slice(1)) await l.close().catch(() => undefined);
    const oldLocks = d.locks.slice(1);
    d.locks = [d.locks[0]!, ...locks];
    for (const l of oldLocks.reverse()) await l.release().catch(() => undefined);
  }

  /** Puts `backend` (over the same chain, or one the caller keeps) behind a disk's export; the previous one is returned still open. */
  swapBackend(diskId: string, backend: ChainBackend): Promise<ExportBackend> {
    return this.disk(diskId).export.swap(backend);
  }

  /**
   * Now's leaf was merged into its parent (live-merge-leaf.ts) and vm.json committed: the export
   * serves `chain`, whose leaf is that parent opened writable over the same layers below. The old
   * leaf and the parent's read-only handle are closed; the parent's lock becomes the leaf's.
   */
  async promoteParent(diskId: string, chain: DiskChain): Promise<void> {
    const d = this.disk(diskId);
    const old = servedChain(d);
    const lock = await lockFile(chain.leaf.path, 'write', { command: 'vm worker' });
    try {
      await d.export.swap(new ChainBackend(chain));
    } catch (e) {
      await lock.release();
      throw e;
    }
    for (const l of old.layers.slice(0, 2)) await l.close().catch(() => undefined);
    const [leafLock, parentLock, ...rest] = d.locks;
    d.locks = [lock, ...rest];
    for (const l of [leafLock, parentLock]) await l?.release().catch(() => undefined);
  }

  private disk(diskId: string): ServedDisk {
    const d = this.disks.find((x) => x.id === diskId);
    if (!d) throw new DiskchainError('INVALID_ARGUMENT', `no served disk ${diskId}`);
    return d;
  }

  /** Every completed write durable. */
  async flush(): Promise<void> {
    for (const d of this.disks) await d.export.flush();
  }

  /** Stops serving: the requests in flight finish, each chain is flushed and closed, the locks dropped. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.server.close();
    const errors: unknown[] = [];
    for (const d of this.disks) await closeDisk(d).catch((e: unknown) => errors.push(e));
    if (errors.length > 0) throw errors[0];
  }
}

async function closeDisk(d: ServedDisk): Promise<void> {
  try {
    await d.export.close();
  } finally {
    for (const l of d.locks.reverse()) await l.release().catch(() => undefined);
  }
}
