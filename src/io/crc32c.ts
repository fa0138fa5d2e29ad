import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/** CRC-32C (Castagnoli) of bytes, as MS-VHDX uses for headers, region tables and log entries. */
export function crc32c(data: Uint8Array): number {
  return nativeCrc32c(Buffer.from(data.buffer, data.byteOffset, data.byteLength)) >>> 0;
}

/** CRC-32C of a structure whose 4-byte checksum field (at checksumOffset) counts as zero. */
export function crc32cWithZeroedField(data: Uint8Array, checksumOffset: number): number {
  const copy = new Uint8Array(data);
  copy.fill(0, checksumOffset, checksumOffset + 4);
  return crc32c(copy);
}
