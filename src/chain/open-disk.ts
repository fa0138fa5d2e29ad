import type { ByteSource } from '../io/byte-source.js';
import { createStaged } from '../io/durable.js';
import { FileSource } from '../io/file-source.js';
import { detectFormat, driverFor } from '../formats/registry.js';
import type { CreateOptions, FormatName, VirtualDisk } from '../formats/types.js';

export interface OpenDiskOptions {
  /** Open the file for writing (only the top layer of a chain is ever writable). */
  writable?: boolean;
  /** Skip probing: treat the file as this format (needed for raw images). */
  format?: FormatName;
  /** VHDX: the DataWriteGuid the first write of this session sets (see OpenOptions). */
  dataWriteGuid?: string;
  /** Wraps the file's byte source (tests inject faults such as a full disk this way). */
  wrapSource?: (source: ByteSource) => ByteSource;
}

/** Opens one file as a single layer, finding its format by content. */
export async function openDisk(path: string, options: OpenDiskOptions = {}): Promise<VirtualDisk> {
  const writable = options.writable ?? false;
  const file = await FileSource.open(path, { writable });
  const source = options.wrapSource ? options.wrapSource(file) : file;
  try {
    const driver = options.format ? driverFor(options.format) : await detectFormat(source);
    return await driver.open(source, { writable, ...(options.dataWriteGuid ? { dataWriteGuid: options.dataWriteGuid } : {}) });
  } catch (e) {
    await source.close();
    throw e;
  }
}

/**
 * Creates a new disk file in `format`; refuses to replace an existing file. The disk is made under a
 * partial name and appears under `path` only once whole and flushed (createStaged), so no crash leaves
 * a half-made disk there, and a refused create leaves nothing.
 */
export async function createDisk(path: string, format: FormatName, options: CreateOptions): Promise<VirtualDisk> {
  const staged = await createStaged(path);
  try {
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
