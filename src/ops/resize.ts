/**
 * Resize-VHD on one disk file: grow, or (VHDX) shrink when nothing allocated lies beyond the new end.
 *
 *   refuse    a differencing disk (it must keep its parent's size); a disk another disk in its folder
 *             names as parent (HAS_DEPENDENTS: its children would read past their parent's end)
 *   lock      the file, for writing (io/lock.ts: no other diskchain or QEMU writer meets it)
 *   resize    the format's own crash-safe change (formats/vhdx/resize.ts, formats/vhd/resize.ts)
 *
 * A file a VM folder's manifest names goes through `vm resize-disk` (checkpoint/resize-disk.ts), which
 * also holds the VM's lock; api/resize.ts sends it there.
 */
import { realpath } from 'node:fs/promises';
import { DiskchainError } from '../io/errors.js';
import { lockFile } from '../io/lock.js';
import { openDisk } from '../chain/open-disk.js';
import { findDependents } from './dependents.js';

export interface ResizeResult {
  path: string;
  format: string;
  diskType: string;
  previousSize: number;
  size: number;
}

export interface ResizeOptions {
  command?: string;
}

export async function resizeDisk(path: string, size: number, options: ResizeOptions = {}): Promise<ResizeResult> {
  const probe = await openDisk(path);
  const facts = { format: probe.format, diskType: probe.diskType, identity: probe.identity(), previousSize: probe.virtualSize };
  await probe.close();
  if (facts.diskType === 'differencing') {
    throw new DiskchainError('UNSUPPORTED', `${path} is a differencing disk, which keeps its parent's size: merge the chain into one disk first (diskchain merge), then resize`, { file: path });
  }
  const dependents = await findDependents([{ path, identities: [facts.identity] }], new Set([await realpath(path)]));
  if (dependents.length > 0) {
    throw new DiskchainError(
      'HAS_DEPENDENTS',
      `refusing to resize ${path}: ${dependents.map((d) => d.path).join(', ')} ${dependents.length === 1 ? 'is a differencing disk' : 'are differencing disks'} of it and must keep its size. Merge them into it (diskchain merge), or convert the newest one to a standalone disk (diskchain convert) and resize that`,
      { file: path, dependents: dependents.map((d) => d.path) },
    );
  }
  const lock = await lockFile(path, 'write', { command: options.command ?? 'diskchain resize' });
  try {
    const disk = await openDisk(path, { writable: true });
    try {
      if (!disk.resize) throw new DiskchainError('UNSUPPORTED', `a ${disk.format} disk cannot be resized by diskchain`, { file: path });
      await disk.resize(size);
    } finally {
      await disk.close();
    }
  } finally {
    await lock.release();
  }
  return { path, format: facts.format, diskType: facts.diskType, previousSize: facts.previousSize, size };
}
