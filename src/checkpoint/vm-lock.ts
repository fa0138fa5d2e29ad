/**
 * The VM's lock: `vm.lock` in the VM folder (never vm.json, which commits replace by rename), held
 * for writing by every operation that changes the VM and for reading by those that read its disks.
 * The one place the checkpoint layer calls io/lock.ts; a holder gives VM_BUSY naming it.
 */
import { open } from 'node:fs/promises';
import { DiskchainError, isDiskchainError } from '../io/errors.js';
import { lockFile, type FileLock, type LockMode } from '../io/lock.js';

export type { FileLock, LockMode };

export const VM_LOCK_FILE = 'vm.lock';

/** Takes the VM's lock (creating vm.lock when missing); another holder gives VM_BUSY. */
export async function lockVm(lockPath: string, mode: LockMode, command: string): Promise<FileLock> {
  // Made once, never removed while the VM exists (a lock on a file that is replaced would lock nothing).
  await open(lockPath, 'a').then(
    (fh) => fh.close(),
    () => undefined, // a reader without write permission: lockFile says what is wrong
  );
  try {
    // sole: two operations of one process (a console's two requests) exclude each other too.
    return await lockFile(lockPath, mode, { command, ...(mode === 'write' ? { sole: true } : {}) });
  } catch (e) {
    if (isDiskchainError(e) && e.code === 'LOCKED') {
      const holder = e.details.holder as { pid?: number; command?: string } | undefined;
      throw new DiskchainError('VM_BUSY', `the VM is busy: ${holder?.pid ? `process ${holder.pid} (${holder.command ?? 'unknown'})` : 'another operation'} holds it; wait for it to finish`, { file: lockPath, ...(holder ? { holder } : {}) });
    }
    throw e;
  }
}
