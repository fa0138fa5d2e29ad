import { checkRange } from '../formats/extents.js';
import type { DiskChain } from './disk-chain.js';

/** Zeros are written this much at a time (one shared, never-written buffer). */
const ZERO_CHUNK = 1024 * 1024;
const ZEROS = new Uint8Array(ZERO_CHUNK);
/** The chain's map is consulted this much at a time (bounded memory whatever the range). */
const WINDOW = 256 * 1024 * 1024;

export interface WriteZeroesOptions {
  /**
   * false: the range must end up allocated (NBD_CMD_FLAG_NO_HOLE): zeros are written everywhere.
   * true (default): nothing is written where the chain already reads zeros, and whole blocks the leaf
   * does not hold become zero blocks where the format has them (VHDX PAYLOAD_BLOCK_ZERO).
   */
  mayUnmap?: boolean;
}

/**
 * Makes [offset, offset+length) of the chain read as zeros, through the leaf:
 *  1. whole leaf blocks: those the chain already reads as zeros are left alone; those the leaf does not
 *     hold (so the parent shows through) become zero blocks when the leaf's format has the state, which
 *     hides the parent without allocating; those the leaf holds get zeros written in place (the file
 *     does not grow: a VHDX keeps no free-space map, so a released block could never be reused);
 *  2. everything else (the edges, and formats without a zero state such as VHD): zeros are written
 *     over the ranges the chain does not already read as zeros.
 * The caller serialises this with other writes to the chain, as for DiskChain.write.
 */
export async function writeZeroes(chain: DiskChain, offset: number, length: number, options: WriteZeroesOptions = {}): Promise<void> {
  checkRange(chain.leaf.path, chain.virtualSize, offset, length);
  if (length === 0) return;
  if (options.mayUnmap === false) return writeZerosOver(chain, offset, length);
  const leaf = chain.leaf;
  const bs = leaf.blockSize;
  const end = offset + length;
  const first = Math.ceil(offset / bs) * bs;
  const last = end === chain.virtualSize ? end : Math.floor(end / bs) * bs;
  if (!leaf.zeroBlocks || first >= last) return zeroWhereNonZero(chain, offset, length);
  await zeroWhereNonZero(chain, offset, first - offset);
  for (let at = first; at < last; at += bs) {
    const blockEnd = Math.min(at + bs, last);
    const chainExtents = await chain.map(at, blockEnd - at);
    if (chainExtents.every((e) => e.state !== 'data')) continue;
    const leafExtents = await leaf.map(at, blockEnd - at);
    const transparent = leafExtents.every((e) => e.state === 'transparent');
    if (!(transparent && (await leaf.zeroBlocks(at, blockEnd - at)))) await zeroWhereNonZero(chain, at, blockEnd - at);
  }
  await zeroWhereNonZero(chain, last, end - last);
}

/** Writes zeros over the parts of the range the chain reads as data. */
async function zeroWhereNonZero(chain: DiskChain, offset: number, length: number): Promise<void> {
  for (let w = offset; w < offset + length; w += WINDOW) {
    for (const e of await chain.map(w, Math.min(WINDOW, offset + length - w))) {
      if (e.state === 'data') await writeZerosOver(chain, e.offset, e.length);
    }
  }
}

async function writeZerosOver(chain: DiskChain, offset: number, length: number): Promise<void> {
  for (let done = 0; done < length; done += ZERO_CHUNK) {
    await chain.write(ZEROS.subarray(0, Math.min(ZERO_CHUNK, length - done)), offset + done);
  }
}
