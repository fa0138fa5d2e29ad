import { lstat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { openChain } from '../chain/open-chain.js';
import type { DiskType, FormatName } from '../formats/types.js';
import { removeFile, renameFile } from '../io/durable.js';
import { DiskchainError } from '../io/errors.js';
import { copyChainInto, type CopyResult } from '../ops/convert.js';
import { syncFolder } from '../ops/journal.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { createDisk } from './create.js';

export interface ConvertOptions extends LongOperationOptions {
  format: FormatName;
  diskType?: Exclude<DiskType, 'differencing'>;
  blockSize?: number;
  /** The source's format when it cannot be probed (raw). */
  sourceFormat?: FormatName;
  /** Folders searched for parents by identity (see OpenChainOptions). */
  searchPaths?: string[];
}

/** The name a convert writes under until it is complete. */
export function partialPath(targetPath: string): string {
  return `${targetPath}.diskchain-partial`;
}

/**
 * Reads `sourcePath` through its whole chain and writes a standalone image at `targetPath`.
 * The target must not exist. The image is written as `<target>.diskchain-partial` and renamed to the
 * target only once complete and flushed, so a convert that dies (even by kill -9 or power loss) never
 * leaves a file under the target's name that looks whole and is not. A failed or cancelled convert
 * removes its partial file; one left by a killed convert is replaced by the next run.
 */
export async function convert(sourcePath: string, targetPath: string, options: ConvertOptions): Promise<CopyResult> {
  await refuseExisting(targetPath);
  const chain = await openChain(sourcePath, { ...(options.sourceFormat ? { format: options.sourceFormat } : {}), ...(options.searchPaths ? { searchPaths: options.searchPaths } : {}) });
  const partial = partialPath(targetPath);
  try {
    await removeFile(partial);
    const target = await createDisk(partial, options.format, {
      diskType: options.diskType ?? 'dynamic',
      virtualSize: chain.virtualSize,
      logicalSectorSize: chain.logicalSectorSize,
      physicalSectorSize: chain.leaf.physicalSectorSize,
      ...(options.blockSize ? { blockSize: options.blockSize } : {}),
    });
    try {
      const result = await copyChainInto(chain, target, options);
      await target.close(); // flushes: the image is durable before the name points at it
      await refuseExisting(targetPath);
      await renameFile(partial, targetPath);
      await syncFolder(dirname(resolve(targetPath)));
      return result;
    } catch (e) {
      await target.close().catch(() => undefined);
      await removeFile(partial);
      throw e;
    }
  } finally {
    await chain.close();
  }
}

async function refuseExisting(path: string): Promise<void> {
  const existing = await lstat(path).catch(() => undefined);
  if (existing) throw new DiskchainError('IO', 'cannot create file: it already exists', { file: path, errno: 'EEXIST' });
}
