import { view } from '../../io/binary.js';
import { MIB } from './metadata-items.js';

/** §2.5.1 Payload block states. */
export const PAYLOAD_BLOCK_NOT_PRESENT = 0;
export const PAYLOAD_BLOCK_UNDEFINED = 1;
export const PAYLOAD_BLOCK_ZERO = 2;
export const PAYLOAD_BLOCK_UNMAPPED = 3;
export const PAYLOAD_BLOCK_FULLY_PRESENT = 6;
export const PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7;
/** §2.5.2 Sector bitmap block states. */
export const SB_BLOCK_NOT_PRESENT = 0;
export const SB_BLOCK_PRESENT = 6;

export const SECTOR_BITMAP_BLOCK_SIZE = MIB;

export const PAYLOAD_STATE_NAMES: Record<number, string> = {
  0: 'NOT_PRESENT',
  1: 'UNDEFINED',
  2: 'ZERO',
  3: 'UNMAPPED',
  6: 'FULLY_PRESENT',
  7: 'PARTIALLY_PRESENT',
};

export interface BatEntry {
  state: number;
  /** File offset in bytes (FileOffsetMB * 1 MiB). */
  fileOffset: number;
}

/** §2.5 A BAT entry is 64 bits: State (bits 0-2), reserved (3-19), FileOffsetMB (20-63). */
export function decodeBatEntry(buf: Uint8Array, at: number): BatEntry {
  const low = (buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0;
  const high = (buf[at + 4]! | (buf[at + 5]! << 8) | (buf[at + 6]! << 16) | (buf[at + 7]! << 24)) >>> 0;
  const offsetMb = high * 4096 + (low >>> 20);
  return { state: low & 7, fileOffset: offsetMb * MIB };
}

export function encodeBatEntry(buf: Uint8Array, at: number, entry: BatEntry): void {
  const offsetMb = entry.fileOffset / MIB;
  const dv = view(buf);
  dv.setUint32(at, (((offsetMb % 4096) << 20) | (entry.state & 7)) >>> 0, true);
  dv.setUint32(at + 4, Math.floor(offsetMb / 4096), true);
}

/** §2.5 The arithmetic of the BAT: chunks of payload entries, each followed by a sector bitmap entry. */
export class BatLayout {
  readonly chunkRatio: number;
  readonly payloadBlocks: number;
  readonly sectorBitmapBlocks: number;
  readonly totalEntries: number;
  readonly sectorsPerBlock: number;

  constructor(
    readonly virtualSize: number,
    readonly blockSize: number,
    readonly logicalSectorSize: number,
    readonly hasParent: boolean,
  ) {
    this.chunkRatio = (2 ** 23 * logicalSectorSize) / blockSize;
    this.payloadBlocks = Math.ceil(virtualSize / blockSize);
    this.sectorBitmapBlocks = Math.ceil(this.payloadBlocks / this.chunkRatio);
    this.totalEntries = hasParent
      ? this.sectorBitmapBlocks * (this.chunkRatio + 1)
      : this.payloadBlocks + Math.floor((this.payloadBlocks - 1) / this.chunkRatio);
    this.sectorsPerBlock = blockSize / logicalSectorSize;
  }

  /** BAT index of payload block `block`. */
  payloadIndex(block: number): number {
    return block + Math.floor(block / this.chunkRatio);
  }

  /** BAT index of the sector bitmap block of chunk `chunk`. */
  sectorBitmapIndex(chunk: number): number {
    return chunk * (this.chunkRatio + 1) + this.chunkRatio;
  }

  /** Is BAT index `i` a sector bitmap entry? */
  isSectorBitmapIndex(i: number): boolean {
    return i % (this.chunkRatio + 1) === this.chunkRatio;
  }

  /** Byte offset, inside the chunk's sector bitmap block, of the first bit of payload block `block`. */
  bitmapByteOffset(block: number): number {
    return ((block % this.chunkRatio) * this.sectorsPerBlock) / 8;
  }

  /** Bytes the BAT occupies, rounded up to 1 MiB (§2.2.3: regions are 1 MiB multiples). */
  regionLength(): number {
    return Math.ceil((this.totalEntries * 8) / MIB) * MIB;
  }
}
