import { view } from '../../io/binary.js';
import { SECTOR } from './constants.js';

/**
 * The Block Allocation Table (spec: "Block Allocation Table and Data Blocks"): Max Table Entries
 * big-endian u32 values at Table Offset, each the absolute sector number of a block's start
 * (its sector bitmap), or 0xFFFFFFFF when the block is not allocated.
 */
export const UNALLOCATED = 0xffffffff;

/** Bytes the table occupies on disk: rounded up to whole sectors. */
export function batByteLength(entries: number): number {
  return Math.ceil((entries * 4) / SECTOR) * SECTOR;
}

export function decodeBat(buf: Uint8Array, entries: number): Uint32Array {
  const out = new Uint32Array(entries);
  const v = view(buf);
  for (let i = 0; i < entries; i++) out[i] = v.getUint32(i * 4);
  return out;
}

/** Encodes entries [first, first+count) of the table, big-endian, for writing in place. */
export function encodeBatRange(bat: Uint32Array, first: number, count: number): Uint8Array {
  const buf = new Uint8Array(count * 4);
  const v = view(buf);
  for (let i = 0; i < count; i++) v.setUint32(i * 4, bat[first + i]!);
  return buf;
}

/** A freshly created table: every entry unallocated, padded with 0xFF to a sector. */
export function emptyBat(entries: number): Uint8Array {
  return new Uint8Array(batByteLength(entries)).fill(0xff);
}
