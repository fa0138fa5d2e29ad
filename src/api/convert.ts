import { rm } from 'node:fs/promises';
import { openChain } from '../chain/open-chain.js';
import type { DiskType, FormatName } from '../formats/types.js';
import { copyChainInto, type CopyResult } from '../ops/convert.js';
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

/**
 * Reads `sourcePath` through its whole chain and writes a standalone image at `targetPath`.
 * The target must not exist; on failure or cancellation the partial target is removed.
 */
export async function convert(sourcePath: string, targetPath: string, options: ConvertOptions): Promise<CopyResult> {
  const chain = await openChain(sourcePath, { ...(options.sourceFormat ? { format: options.sourceFormat } : {}), ...(options.searchPaths ? { searchPaths: options.searchPaths } : {}) });
  try {
    const target = await createDisk(targetPath, options.format, {
      diskType: options.diskType ?? 'dynamic',
      virtualSize: chain.virtualSize,
      logicalSectorSize: chain.logicalSectorSize,
      physicalSectorSize: chain.leaf.physicalSectorSize,
      ...(options.blockSize ? { blockSize: options.blockSize } : {}),
    });
    try {
      const result = await copyChainInto(chain, target, options);
      await target.close();
      return result;
    } catch (e) {
      await target.close().catch(() => undefined);
      await rm(targetPath, { force: true });
      throw e;
    }
  } finally {
    await chain.close();
  }
}
