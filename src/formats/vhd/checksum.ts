/**
 * The footer and dynamic header checksum: the one's complement of the byte sum of the structure,
 * with the 4-byte checksum field itself counted as zero (spec: Checksum).
 */
export function vhdChecksum(buf: Uint8Array, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue;
    sum += buf[i]!;
  }
  return ~sum >>> 0;
}
