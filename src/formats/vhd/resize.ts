/**
 * Resize-VHD for VHD (the pieces; VhdDisk.resize runs them in this order). Resize-VHD grows VHD
 * files and shrinks only VHDX, so a VHD only grows. The VHD has no log: the order alone makes each
 * crash leave the old size or the new one.
 *
 *   fixed     (1) the new footer written at the new end (the file grows: the new data area is a hole,
 *             zeros), flushed; (2) the old footer's 512 bytes, now inside the data area, zeroed.
 *             A crash between (1) and (2) leaves the new size with the old footer's bytes as the first
 *             sector of the new space; running the same resize again zeroes them.
 *   dynamic   when Max Table Entries covers the new size: entries past the old size set unallocated
 *             (0xFFFFFFFF), then the footers (copy at 0, then the end footer: the commit). Otherwise
 *             a larger BAT is written where the end footer was, a footer after it, flushed; then the
 *             dynamic header names it in one 1024-byte write with its checksum (the old size still
 *             fits it), flushed; then the footers.
 */
import { view } from '../../io/binary.js';
import { DiskchainError } from '../../io/errors.js';
import { vhdChecksum } from './checksum.js';
import { MAX_BAT_ENTRIES, MAX_CREATE_SIZE, SECTOR } from './constants.js';
import { HEADER_CHECKSUM_OFFSET } from './dynamic-header.js';
import { decodeFooter, encodeFooter } from './footer.js';
import { geometryToWrite } from './geometry.js';
import type { VhdLayout } from './layout.js';

export function checkVhdResize(layout: VhdLayout, size: number, file: string): void {
  if (layout.diskType === 'differencing') {
    throw new DiskchainError('UNSUPPORTED', "a differencing disk cannot be resized (it must keep its parent's size): merge the chain into one disk first (diskchain merge), then resize", { file });
  }
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0 || size > MAX_CREATE_SIZE) {
    throw new DiskchainError('INVALID_ARGUMENT', `the new size ${size} must be a multiple of 512 bytes, up to the VHD maximum of 2040 GiB`, { file, size });
  }
  if (size < layout.virtualSize) {
    throw new DiskchainError('UNSUPPORTED', `a VHD cannot shrink (Resize-VHD shrinks VHDX only): convert it to VHDX (diskchain convert -O vhdx) and shrink that`, { file, size });
  }
  if (layout.diskType !== 'fixed' && Math.ceil(size / layout.blockSize) > MAX_BAT_ENTRIES) {
    throw new DiskchainError('INVALID_ARGUMENT', `${size} bytes need more than ${MAX_BAT_ENTRIES} blocks of ${layout.blockSize} bytes`, { file, size });
  }
}

/**
 * The footer in use with Current Size and the geometry of `size` (as create chooses it, so qemu-img
 * reads the new size with no options: docs/formats/vhd.md). Original Size too: the spec calls
 * it informational, but libvhdi (20210425) takes the media size from it, so a resize that kept it
 * would show the old size to libvhdi readers.
 */
export function resizedFooter(footerBytes: Uint8Array, size: number): Uint8Array {
  const f = decodeFooter(footerBytes);
  return encodeFooter({ ...f, originalSize: BigInt(size), currentSize: BigInt(size), geometry: geometryToWrite(size, f.creatorApplication) });
}

/** The dynamic header naming a BAT of `entries` entries at `tableOffset`, its checksum recomputed. */
export function headerWithTable(header: Uint8Array, tableOffset: number, entries: number): Uint8Array {
  const out = new Uint8Array(header);
  view(out).setBigUint64(16, BigInt(tableOffset));
  view(out).setUint32(28, entries >>> 0);
  view(out).setUint32(HEADER_CHECKSUM_OFFSET, vhdChecksum(out, HEADER_CHECKSUM_OFFSET));
  return out;
}
