/**
 * The VM's lock: `vm.lock` in the VM folder (never vm.json, which commits replace by rename), held
 * for writing by every operation that changes the VM and for reading by those that read its disks.
 *
 * This is the one place that calls the file-lock interface of the trust issue (`src/io/lock.ts`:
 * `lockFile(path, mode, {command})`, throwing LOCKED with the holder at once). Until that module is on
 * main, `lockFile` below is a stand-in with the same signature: an exclusive owner file created with
 * O_EXCL next to the lock, naming the pid and command, taken over when its process is gone. Both
 * modes are exclusive in the stand-in. Switching = replace the stand-in by
 * `import { lockFile, type FileLock } from '../io/lock.js'`.
 */
import { open, readFile, rm } from 'node:fs/promises';
import { DiskchainError, isDiskchainError } from '../io/errors.js';

export type LockMode = 'read' | 'write';

export interface FileLock {
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  command: string;
  mode: LockMode;
  since: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Stand-in for io/lock.ts's lockFile (see the comment at the top). */
async function lockFile(path: string, mode: LockMode, options: { command: string }): Promise<FileLock> {
  const owner = `${path}.owner`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(owner, 'wx');
      const holder: Holder = { pid: process.pid, command: options.command, mode, since: new Date().toISOString() };
      await fh.writeFile(JSON.stringify(holder));
      await fh.close();
      let released = false;
      return {
        release: async () => {
          if (released) return;
          released = true;
          await rm(owner, { force: true });
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let holder: Holder | undefined;
    try {
      holder = JSON.parse(await readFile(owner, 'utf8')) as Holder;
    } catch {
      holder = undefined; // being written, or damaged: treated as held once, then taken over
    }
    if (holder && typeof holder.pid === 'number' && holder.pid !== process.pid && alive(holder.pid)) {
      throw new DiskchainError('LOCKED', `locked by process ${holder.pid} (${holder.command})`, { file: path, holder });
    }
    if (holder?.pid === process.pid) throw new DiskchainError('LOCKED', `already locked by this process (${holder.command})`, { file: path, holder });
    await rm(owner, { force: true }); // its process is gone: take it over
  }
  throw new DiskchainError('LOCKED', 'the lock could not be taken', { file: path });
}

export const VM_LOCK_FILE = 'vm.lock';

/** Takes the VM's lock; another holder gives VM_BUSY naming it. */
export async function lockVm(lockPath: string, mode: LockMode, command: string): Promise<FileLock> {
  try {
    return await lockFile(lockPath, mode, { command });
  } catch (e) {
    if (isDiskchainError(e) && e.code === 'LOCKED') {
      const holder = e.details.holder as { pid?: number; command?: string } | undefined;
      throw new DiskchainError('VM_BUSY', `the VM is busy: ${holder?.pid ? `process ${holder.pid} (${holder.command ?? 'unknown'})` : 'another operation'} holds it; wait for it to finish`, { file: lockPath, ...(holder ? { holder } : {}) });
    }
    throw e;
  }
}
