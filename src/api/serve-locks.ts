import { lockFile, type FileLock, type LockMode } from '../io/lock.js';

/**
 * The locks a served chain holds for as long as it is served (docs/locking.md): the leaf's write lock
 * when it is served writable, a read lock otherwise, and read locks on every parent, so neither another
 * diskchain command nor QEMU changes a file under the clients (and QEMU refuses to open a served leaf
 * for writing). Taken before the files are opened (the leaf) or right after the chain is found (the
 * parents); `release` drops them all.
 */
export class ServedLocks {
  private readonly held: FileLock[] = [];

  /** Takes `mode` on `path`, or throws LOCKED naming the holder. */
  async take(path: string, mode: LockMode): Promise<void> {
    this.held.push(await lockFile(path, mode));
  }

  async release(): Promise<void> {
    for (const lock of this.held.splice(0).reverse()) await lock.release();
  }
}
