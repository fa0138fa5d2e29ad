import type { DiskChain } from '../chain/disk-chain.js';

/**
 * The locks a served chain holds for as long as it is served: the leaf's write lock when it is served
 * writable (a read lock otherwise) and read locks on every parent, so neither another diskchain command
 * nor QEMU changes a file under the clients. Resolves with the function that drops them.
 *
 * PENDING: src/io/lock.ts (branch trust-lock) is not on main yet. When it lands, this body becomes:
 *   const locks = [await lockFile(chain.leaf.path, writable ? 'write' : 'read', { command: 'serve' })];
 *   for (const parent of chain.layers.slice(1)) locks.push(await lockFile(parent.path, 'read', { command: 'serve' }));
 *   return async () => { for (const l of locks.reverse()) await l.release(); };
 * (taking care to release the locks already taken when a later one throws LOCKED).
 */
export async function lockServedChain(chain: DiskChain, writable: boolean): Promise<() => Promise<void>> {
  void chain;
  void writable;
  return async () => undefined;
}
