import { isAllZero } from '../io/binary.js';
import { throwIfAborted } from '../io/errors.js';
import type { DiskChain } from '../chain/disk-chain.js';
import type { VirtualDisk } from '../formats/types.js';
import type { LongOperationOptions } from './progress.js';

/** Bytes read and written at a time: bounded memory whatever the disk size. */
export const COPY_CHUNK = 8 * 1024 * 1024;
const READ_AHEAD = 3;

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
  // Reads run ahead of the (in-order) writes: READ_AHEAD chunks in flight, one buffer each.
  const buffers = Array.from({ length: READ_AHEAD + 1 }, () => new Uint8Array(chunkSize));
  const fetch = async (offset: number, buf: Uint8Array): Promise<Uint8Array | undefined> => {
    const n = Math.min(chunkSize, size - offset);
    const extents = await chain.map(offset, n);
    if (!extents.some((e) => e.state === 'data')) return undefined;
    const part = buf.subarray(0, n);
    await chain.read(part, offset);
    return isAllZero(part) ? undefined : part;
  };
  const chunks = Math.ceil(size / chunkSize);
  const pending: Promise<Uint8Array | undefined>[] = [];
  for (let i = 0; i < Math.min(READ_AHEAD, chunks); i++) pending.push(fetch(i * chunkSize, buffers[i]!));
  try {
    for (let i = 0; i < chunks; i++) {
      throwIfAborted(options.signal);
      const part = await pending.shift()!;
      const ahead = i + READ_AHEAD;
      if (ahead < chunks) pending.push(fetch(ahead * chunkSize, buffers[ahead % buffers.length]!));
      const offset = i * chunkSize;
      const n = Math.min(chunkSize, size - offset);
      if (part) {
        await target.write(part, offset);
        bytesWritten += n;
      } else bytesSkipped += n;
      options.onProgress?.(offset + n, size);
    }
  } catch (e) {
    await Promise.allSettled(pending);
    throw e;
  }
  await target.flush();
  return { bytesWritten, bytesSkipped };
}
