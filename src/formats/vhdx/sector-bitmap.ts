/**
 * §2.5.2 / §3.1 Sector bitmaps: one bit a logical sector, bit 0 of byte 0 is the first sector
 * of the chunk; a set bit means the sector's data is in this file, a clear bit means the parent's.
 */
export function bitIsSet(bitmap: Uint8Array, bit: number): boolean {
  return ((bitmap[bit >>> 3]! >>> (bit & 7)) & 1) === 1;
}

/** Sets bits [first, first+count). */
export function setBits(bitmap: Uint8Array, first: number, count: number): void {
  let bit = first;
  const end = first + count;
  while (bit < end && (bit & 7) !== 0) {
    bitmap[bit >>> 3]! |= 1 << (bit & 7);
    bit++;
  }
  const wholeBytes = Math.floor((end - bit) / 8);
  if (wholeBytes > 0) {
    bitmap.fill(0xff, bit >>> 3, (bit >>> 3) + wholeBytes);
    bit += wholeBytes * 8;
  }
  while (bit < end) {
    bitmap[bit >>> 3]! |= 1 << (bit & 7);
    bit++;
  }
}

/** Length of the run of equal bits starting at `first`, at most `limit` bits. */
export function runLength(bitmap: Uint8Array, first: number, limit: number): number {
  const value = bitIsSet(bitmap, first);
  const fullByte = value ? 0xff : 0x00;
  let bit = first + 1;
  const end = first + limit;
  while (bit < end) {
    if ((bit & 7) === 0 && bit + 8 <= end && bitmap[bit >>> 3] === fullByte) {
      bit += 8;
      continue;
    }
    if (bitIsSet(bitmap, bit) !== value) break;
    bit++;
  }
  return bit - first;
}
