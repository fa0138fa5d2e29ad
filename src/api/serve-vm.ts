import { DiskchainError } from '../io/errors.js';
import type { DiskChain } from '../chain/disk-chain.js';
import { ChainBackend } from '../server/backend.js';
import { NbdExport } from '../server/export.js';
import { NbdServer } from '../server/server.js';
import { listenTarget, type ServeHandle, type ServeOptions } from './serve.js';
import { ServedLocks } from './serve-locks.js';
import { openVm } from './vm.js';

export interface ServeVmOptions extends Omit<ServeOptions, 'exportName' | 'format' | 'searchPaths' | 'ignoreIdMismatch'> {
  /** Serve the disks as this checkpoint froze them (always read-only); default: Now. */
  checkpoint?: string;
}

/**
 * Serves every disk of a VM that is not running over NBD, one export per disk named by its id
 * (disk0, disk1, ...): Now's disks (writable with `writable`, read-only otherwise) or a checkpoint's
 * (read-only). The VM's lock is held while served (write when writable, read otherwise), so the VM
 * cannot start or change meanwhile (VM_BUSY), and each chain's files are locked as `serve` locks them.
 */
export async function serveVm(folder: string, options: ServeVmOptions = {}): Promise<ServeHandle> {
  const where = listenTarget(options);
  const writable = options.writable ?? false;
  if (writable && options.checkpoint !== undefined) throw new DiskchainError('READ_ONLY', "a checkpoint's disks are frozen: serve Now to write");
  const vm = await openVm(folder, { lock: writable ? 'write' : 'read', command: 'serve --vm' });
  const locks = new ServedLocks();
  const chains: DiskChain[] = [];
  const exports: NbdExport[] = [];
  try {
    for (const d of vm.manifest.disks) {
      const chain = await vm.openDisk(d.id, { ...(options.checkpoint !== undefined ? { checkpoint: options.checkpoint } : {}), writable });
      chains.push(chain);
      await locks.take(chain.leaf.path, writable ? 'write' : 'read');
      for (const parent of chain.layers.slice(1)) await locks.take(parent.path, 'read');
      exports.push(new NbdExport(new ChainBackend(chain), { name: d.id, description: `${vm.name} ${d.id}${options.checkpoint !== undefined ? ` at checkpoint ${options.checkpoint}` : ''}` }));
    }
    const server = new NbdServer({
      exports,
      ...(options.tls ? { tls: options.tls } : {}),
      ...(options.limits ? { limits: options.limits } : {}),
      ...(options.maxConnections !== undefined ? { maxConnections: options.maxConnections } : {}),
      ...(options.log ? { log: options.log } : {}),
    });
    const address = await server.listen(where);
    let closing: Promise<void> | undefined;
    return {
      address,
      exports,
      close: () =>
        (closing ??= (async () => {
          try {
            await server.close();
            for (const e of exports) await e.close();
          } finally {
            await locks.release();
            await vm.close();
          }
        })()),
    };
  } catch (e) {
    for (const c of chains) await c.close().catch(() => undefined);
    await locks.release().catch(() => undefined);
    await vm.close();
    throw e;
  }
}
