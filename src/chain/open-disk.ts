import type { ByteSource } from '../io/byte-source.js';
import { createStaged } from '../io/durable.js';
import { DiskchainError } from '../io/errors.js';
import { FileSource } from '../io/file-source.js';
import { lockFile, type FileLock } from '../io/lock.js';
import { detectFormat, driverFor } from '../formats/registry.js';
import type { CreateOptions, FormatName, VirtualDisk } from '../formats/types.js';
import { refuseIfReservedByMerge } from './pending-merge.js';

export interface OpenDiskOptions {
  /** Open the file for writing (only the top layer of a chain is ever writable). */
  writable?: boolean;
  /** Skip probing: treat the file as this format (needed for raw images). */
  format?: FormatName;
  /** VHDX: the DataWriteGuid the first write of this session sets (see OpenOptions). */
  dataWriteGuid?: string;
  /** Wraps the file's byte source (tests inject faults such as a full disk this way). */
  wrapSource?: (source: ByteSource) => ByteSource;
  /**
   * Read-only opens: take and check no lock, so a file another process is writing can be read (what
   * is read may be torn), as qemu-img's -U. Also for reading headers only (scan, the dependents search).
   */
  forceShare?: boolean;
  /** Writable opens: the journal of the merge doing the open, which may write the files it reserves. */
  mergeJournal?: string;
}

/**
 * Opens one file as a single layer, finding its format by content. The file is locked first
 * (docs/locking.md): a writable open takes a sole write lock (and is refused while a pending merge
 * reserves the file), a read-only one a read lock unless `forceShare`; closing the disk releases it.
 */
export async function openDisk(path: string, options: OpenDiskOptions = {}): Promise<VirtualDisk> {
  const writable = options.writable ?? false;
  if (writable && options.forceShare) throw new DiskchainError('INVALID_ARGUMENT', '--force-share is for reading only', { file: path });
  const lock = writable ? await lockFile(path, 'write', { sole: true }) : options.forceShare ? undefined : await lockFile(path, 'read');
  let file: FileSource;
  try {
    if (writable) await refuseIfReservedByMerge(path, options.mergeJournal);
    file = await FileSource.open(path, { writable, ...(lock ? { onClose: () => lock.release() } : {}) });
  } catch (e) {
    await lock?.release();
    throw e;
  }
  const source = options.wrapSource ? options.wrapSource(file) : file;
  try {
    if (lock) await sameFile(file, lock);
    const driver = options.format ? driverFor(options.format) : await detectFormat(source);
    return await driver.open(source, { writable, ...(options.dataWriteGuid ? { dataWriteGuid: options.dataWriteGuid } : {}) });
  } catch (e) {
    await source.close();
    throw e;
  }
}

/** The file opened is the file locked (not one renamed into its place in between). */
async function sameFile(file: FileSource, lock: FileLock): Promise<void> {
  const s = await file.stat();
  if (s.dev !== lock.dev || s.ino !== lock.ino) {
    throw new DiskchainError('LOCKED', 'the file was replaced while it was being opened; try again', { file: lock.path, heldBy: 'unknown' });
  }
}

/**
 * Creates a new disk file in `format`; refuses to replace an existing file. The disk is made under a
 * partial name and appears under `path` only once whole and flushed (createStaged), so no crash leaves
 * a half-made disk there, and a refused create leaves nothing. The file is write-locked from its
 * creation (the partial name and `path` are one inode) until the disk is closed.
 */
export async function createDisk(path: string, format: FormatName, options: CreateOptions): Promise<VirtualDisk> {
  const staged = await createStaged(path);
  try {
    const lock = await lockFile(staged.partialPath, 'write', { sole: true });
    staged.source.onClose(() => lock.release());
    await sameFile(staged.source, lock);
    const disk = await driverFor(format).create(staged.source, options);
    try {
      await staged.publish();
    } catch (e) {
      await disk.close().catch(() => undefined);
      throw e;
    }
    return disk;
  } catch (e) {
    // A refused create (a size, block size or sector size the format refuses, a full disk) leaves nothing.
    await staged.source.close().catch(() => undefined);
    await staged.discard();
    throw e;
  }
}
