import { SECTOR } from './constants.js';

/**
 * The per-block sector bitmap (spec: "Block Allocation Table and Data Blocks", Sector Bitmap):
 * one bit per sector of the block, most significant bit first, padded to a whole sector and stored
 * just before the block's data. A set bit means the sector's data is in this file; in a
 * differencing disk a clear bit means "read the parent".
 */
export function bitmapByteLength(blockSize: number): number {
  const bits = blockSize / SECTOR;
  return Math.ceil(bits / 8 / SECTOR) * SECTOR;
}

export function bitIsSet(bitmap: Uint8Array, sector: number): boolean {
  return ((bitmap[sector >>> 3]! >>> (7 - (sector & 7))) & 1) === 1;
}

export function setBits(bitmap: Uint8Array, first: number, count: number): void {
  for (let s = first; s < first + count; s++) {
    if ((s & 7) === 0 && s + 8 <= first + count) {
      bitmap[s >>> 3] = 0xff;
      s += 7;
      continue;
    }
    bitmap[s >>> 3] = (bitmap[s >>> 3]! | (0x80 >>> (s & 7))) & 0xff;
  }
}

/** True when every bit in [first, first+count) is set. */
export function allBitsSet(bitmap: Uint8Array, first: number, count: number): boolean {
  for (let s = first; s < first + count; s++) if (!bitIsSet(bitmap, s)) return false;
  return true;
}

/** Runs of equal bits over [first, first+count): [start, length, set][]. */
export function bitRuns(bitmap: Uint8Array, first: number, count: number): Array<[number, number, boolean]> {
  const runs: Array<[number, number, boolean]> = [];
  let s = first;
  const end = first + count;
  while (s < end) {
    const set = bitIsSet(bitmap, s);
    let e = s + 1;
    while (e < end) {
      // Skip whole bytes that are uniformly the run's value.
      if ((e & 7) === 0 && e + 8 <= end && bitmap[e >>> 3] === (set ? 0xff : 0)) {
        e += 8;
        continue;
      }
      if (bitIsSet(bitmap, e) !== set) break;
      e++;
    }
    runs.push([s, e - s, set]);
    s = e;
  }
  return runs;
}

export function countBits(bitmap: Uint8Array, count: number): number {
  let n = 0;
  for (let s = 0; s < count; s++) if (bitIsSet(bitmap, s)) n++;
  return n;
}
