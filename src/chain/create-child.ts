import type { FormatName, ParentSpec, VirtualDisk } from '../formats/types.js';
import { DiskchainError } from '../io/errors.js';
import { rememberLink } from './link-store.js';
import { parentPaths } from './link-paths.js';
import { createDisk, openDisk } from './open-disk.js';

export interface CreateChildOptions {
  /** Payload block size of the child (format default otherwise). */
  blockSize?: number;
  /** The format the caller expects (its file name's, say): refused unless the parent has it, as a child has its parent's format. */
  format?: FormatName;
}

/**
 * Creates a differencing disk (a checkpoint) over `parentPath`. The child records the parent's
 * identity and a relative path (tried first, so the pair can move together); the absolute path only
 * where Windows could follow it (a POSIX path is left out: docs/formats/vhdx.md).
 */
export async function createChild(childPath: string, parentPath: string, options: CreateChildOptions = {}): Promise<VirtualDisk> {
  const parent = await openDisk(parentPath);
  let spec: ParentSpec;
  let format: FormatName;
  try {
    if (parent.format === 'raw') throw new DiskchainError('UNSUPPORTED', 'a raw image cannot be a parent', { file: parentPath });
    format = parent.format;
    if (options.format && options.format !== format) {
      throw new DiskchainError('INVALID_ARGUMENT', `${childPath} is named like a ${options.format.toUpperCase()} file, but its parent is a ${format.toUpperCase()}: a differencing disk has its parent's format (name it .${format === 'vhdx' ? 'avhdx' : 'avhd'})`, { file: childPath });
    }
    spec = {
      identity: parent.identity(),
      virtualSize: parent.virtualSize,
      logicalSectorSize: parent.logicalSectorSize,
      physicalSectorSize: parent.physicalSectorSize,
      ...parentPaths(childPath, parentPath),
      ...diskIdOf(parent),
    };
  } finally {
    await parent.close();
  }
  const child = await createDisk(childPath, format, { diskType: 'differencing', virtualSize: spec.virtualSize, parent: spec, ...(options.blockSize ? { blockSize: options.blockSize } : {}) });
  // A parent in another folder: diskchain made this link, so later commands follow it (link-store.ts).
  rememberLink(childPath, parentPath, 'create');
  return child;
}

function diskIdOf(disk: VirtualDisk): { parentDiskId?: string } {
  const details = disk.details();
  const id = details.virtualDiskId ?? details.uniqueId;
  return typeof id === 'string' ? { parentDiskId: id } : {};
}
