import { statfs } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { DiskchainError } from '../io/errors.js';
import type { DiskChain } from '../chain/disk-chain.js';
import type { VirtualDisk } from '../formats/types.js';

const MIB = 1024 * 1024;

/** Bytes free for an unprivileged writer on the file system that holds `path`. */
export async function freeBytes(path: string): Promise<number> {
  const s = await statfs(dirname(resolve(path)));
  return s.bavail * s.bsize;
}

/** Refuses early, with both numbers, when `needed` bytes do not fit beside `path`. */
export async function ensureSpace(path: string, needed: number, what: string): Promise<number> {
  const free = await freeBytes(path);
  if (needed > free) {
    throw new DiskchainError('NO_SPACE', `${what} needs ${needed} bytes on the file system of ${path}, which has ${free} free`, { file: path, needed, free });
  }
  return free;
}

/** A range of the upper layers to copy into a lower disk: data, or zeros that must override it. */
export interface CopyExtent {
  offset: number;
  length: number;
  state: 'data' | 'zero';
}

/**
 * The ranges the layers of `upper` (a chain whose base is NOT the target) hold, which must be
 * written into `target` so the target alone reads as the whole chain did. Zero ranges where the
 * target already reads zeros by itself are left out.
 */
export async function* extentsToCopy(upper: DiskChain, target: VirtualDisk, signal?: AbortSignal): AsyncGenerator<CopyExtent> {
  for await (const e of upper.mapWindows(signal)) {
    if (e.state === 'data') yield { offset: e.offset, length: e.length, state: 'data' };
    else if (e.state === 'zero') {
      for (const t of await target.map(e.offset, e.length)) if (t.state !== 'zero') yield { offset: t.offset, length: t.length, state: 'zero' };
    }
  }
}

export interface GrowthForecast {
  /** Bytes to copy into the target. */
  bytesToCopy: number;
  /** Payload blocks of the target that are not allocated yet and will be. */
  newBlocks: number;
  /** Upper bound of the bytes the target file grows by. */
  bytesNeeded: number;
}

/** How much `target` grows when the ranges of `upper` are written into it. */
export async function forecastGrowth(upper: DiskChain, target: VirtualDisk, signal?: AbortSignal): Promise<GrowthForecast> {
  const bs = target.blockSize;
  let bytesToCopy = 0;
  let newBlocks = 0;
  let lastBlock = -1;
  for await (const e of extentsToCopy(upper, target, signal)) {
    bytesToCopy += e.length;
    const first = Math.max(Math.floor(e.offset / bs), lastBlock + 1);
    const last = Math.floor((e.offset + e.length - 1) / bs);
    for (let b = first; b <= last; b++) {
      const blockLength = Math.min(bs, target.virtualSize - b * bs);
      const allocated = (await target.map(b * bs, blockLength)).some((x) => x.state === 'data');
      if (!allocated) newBlocks++;
    }
    lastBlock = Math.max(lastBlock, last);
  }
  return { bytesToCopy, newBlocks, bytesNeeded: newBlocks * bs + allocationOverhead(target, newBlocks) };
}

/** Format structures that grow with new blocks, as an upper bound. */
function allocationOverhead(target: VirtualDisk, newBlocks: number): number {
  if (target.diskType === 'fixed' || newBlocks === 0) return 0;
  if (target.format === 'vhd') {
    // VHD spec, "Block Allocation Table and Data Blocks": each block is preceded by its sector bitmap, padded to a sector.
    const bitmap = Math.ceil(target.blockSize / 512 / 8 / 512) * 512;
    return newBlocks * bitmap + 512;
  }
  if (target.format === 'vhdx') {
    // MS-VHDX §2.5: blocks are 1 MiB aligned; a differencing file also needs a 1 MiB sector bitmap
    // block per chunk (2^23 sectors) that gains its first partial block.
    const chunkBytes = 8388608 * target.logicalSectorSize;
    const bitmaps = target.diskType === 'differencing' ? Math.min(newBlocks, Math.ceil(target.virtualSize / chunkBytes)) * MIB : 0;
    return bitmaps + MIB;
  }
  return 0;
}
