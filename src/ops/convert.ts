import { isAllZero } from '../io/binary.js';
import { throwIfAborted } from '../io/errors.js';
import type { DiskChain } from '../chain/disk-chain.js';
import type { VirtualDisk } from '../formats/types.js';
import type { LongOperationOptions } from './progress.js';

/** Bytes read and written at a time: bounded memory whatever the disk size. */
export const COPY_CHUNK = 8 * 1024 * 1024;

export interface CopyResult {
  bytesWritten: number;
  bytesSkipped: number;
}

/**
 * Copies what the chain reads into `target` (a new, empty disk of the same size).
 * Ranges that are absent or zero in every layer are skipped, and so are chunks that read as zeros,
 * so a sparse source gives a sparse target.
 */
export async function copyChainInto(chain: DiskChain, target: VirtualDisk, options: LongOperationOptions = {}): Promise<CopyResult> {
  const size = chain.virtualSize;
  const chunkSize = Math.min(COPY_CHUNK, Math.max(target.blockSize, 1024 * 1024));
  const buf = new Uint8Array(chunkSize);
  let bytesWritten = 0;
  let bytesSkipped = 0;
  for (let offset = 0; offset < size; offset += chunkSize) {
    throwIfAborted(options.signal);
    const n = Math.min(chunkSize, size - offset);
    const extents = await chain.map(offset, n);
    const holds = extents.some((e) => e.state === 'data');
    const part = buf.subarray(0, n);
    if (holds) await chain.read(part, offset);
    if (!holds || isAllZero(part)) bytesSkipped += n;
    else {
      await target.write(part, offset);
      bytesWritten += n;
    }
    options.onProgress?.(offset + n, size);
  }
  await target.flush();
  return { bytesWritten, bytesSkipped };
}
