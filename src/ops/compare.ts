import type { DiskChain } from '../chain/disk-chain.js';
import { throwIfAborted } from '../io/errors.js';
import { COPY_CHUNK } from './convert.js';
import type { LongOperationOptions } from './progress.js';

export interface CompareResult {
  identical: boolean;
  sizeA: number;
  sizeB: number;
  /** The first byte offset where the contents differ (or where the shorter disk ends). */
  firstDifference: number | null;
}

/** Compares two disks as their chains read them, a chunk at a time. */
export async function compareChains(a: DiskChain, b: DiskChain, options: LongOperationOptions = {}): Promise<CompareResult> {
  const common = Math.min(a.virtualSize, b.virtualSize);
  const bufA = new Uint8Array(COPY_CHUNK);
  const bufB = new Uint8Array(COPY_CHUNK);
  for (let offset = 0; offset < common; offset += COPY_CHUNK) {
    throwIfAborted(options.signal);
    const n = Math.min(COPY_CHUNK, common - offset);
    const pa = bufA.subarray(0, n);
    const pb = bufB.subarray(0, n);
    await Promise.all([a.read(pa, offset), b.read(pb, offset)]);
    if (Buffer.compare(pa, pb) !== 0) {
      let i = 0;
      while (pa[i] === pb[i]) i++;
      return { identical: false, sizeA: a.virtualSize, sizeB: b.virtualSize, firstDifference: offset + i };
    }
    options.onProgress?.(offset + n, common);
  }
  const sameSize = a.virtualSize === b.virtualSize;
  return { identical: sameSize, sizeA: a.virtualSize, sizeB: b.virtualSize, firstDifference: sameSize ? null : common };
}
