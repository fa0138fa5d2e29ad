import CRC32C from 'crc-32/crc32c.js';

// crc-32 is pure JavaScript (about 1 GB/s here): enough for the few KiB to MiB of VHDX metadata
// we checksum, and unlike a native addon it costs nothing to load at start-up.

/** CRC-32C (Castagnoli) of bytes, as MS-VHDX uses for headers, region tables and log entries. */
export function crc32c(data: Uint8Array): number {
  return CRC32C.buf(data) >>> 0;
}

/** CRC-32C of a structure whose 4-byte checksum field (at checksumOffset) counts as zero. */
export function crc32cWithZeroedField(data: Uint8Array, checksumOffset: number): number {
  const copy = new Uint8Array(data);
  copy.fill(0, checksumOffset, checksumOffset + 4);
  return crc32c(copy);
}
