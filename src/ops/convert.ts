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
  let bytesWritten = 0;
  let bytesSkipped = 0;
  // Two buffers: the next chunk is read while the previous one is written.
  const buffers = [new Uint8Array(chunkSize), new Uint8Array(chunkSize)];
  const fetch = async (offset: number, buf: Uint8Array): Promise<Uint8Array | undefined> => {
    const n = Math.min(chunkSize, size - offset);
    const extents = await chain.map(offset, n);
    if (!extents.some((e) => e.state === 'data')) return undefined;
    const part = buf.subarray(0, n);
    await chain.read(part, offset);
    return isAllZero(part) ? undefined : part;
  };
  let pending = size > 0 ? fetch(0, buffers[0]!) : undefined;
  for (let offset = 0, i = 0; offset < size; offset += chunkSize, i++) {
    throwIfAborted(options.signal);
    const part = await pending!;
    const next = offset + chunkSize;
    pending = next < size ? fetch(next, buffers[(i + 1) % 2]!) : undefined;
    const n = Math.min(chunkSize, size - offset);
    try {
      if (part) {
        await target.write(part, offset);
        bytesWritten += n;
      } else bytesSkipped += n;
    } catch (e) {
      await pending?.catch(() => undefined);
      throw e;
    }
    options.onProgress?.(offset + n, size);
  }
  await target.flush();
  return { bytesWritten, bytesSkipped };
}
