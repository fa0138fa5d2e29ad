import { lockFile, type FileLock, type LockMode } from '../io/lock.js';

/**
 * Locks an operation holds from start to end (docs/locking.md, "What takes which lock"), over and
 * above those its opens take: a write lock on each file it changes, so that nobody writes them
 * between two of its opens, and read locks on what it reads through. Opens inside the operation
 * share them (locks of one process share a file).
 */
export class OperationLocks {
  private readonly held: FileLock[] = [];

  /** Takes `mode` on each path, in order, or throws LOCKED naming the holder (keeping those taken until release). */
  async take(paths: readonly string[], mode: LockMode): Promise<void> {
    for (const path of paths) this.held.push(await lockFile(path, mode));
  }

  async release(): Promise<void> {
    for (const lock of this.held.splice(0).reverse()) await lock.release().catch(() => undefined);
  }
}

/** Runs `fn` holding a write lock on each of `writes` (and a read lock on each of `reads`), then releases them. */
export async function withOperationLocks<T>(writes: readonly string[], reads: readonly string[], fn: () => Promise<T>): Promise<T> {
  const locks = new OperationLocks();
  try {
    await locks.take(writes, 'write');
    await locks.take(reads, 'read');
    return await fn();
  } finally {
    await locks.release();
  }
}
