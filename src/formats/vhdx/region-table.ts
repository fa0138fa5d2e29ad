import { asciiAt, toSafeNumber, view, writeAscii } from '../../io/binary.js';
import { crc32cWithZeroedField } from '../../io/crc32c.js';
import { guidToString, writeGuid } from '../../io/guid.js';

/** §2.2.3 Region table: two 64 KiB copies at 192 KiB and 256 KiB. */
export const REGION_TABLE_OFFSETS = [192 * 1024, 256 * 1024] as const;
export const REGION_TABLE_SIZE = 64 * 1024;
export const MAX_REGION_ENTRIES = 2047;
const SIGNATURE = 'regi';

/** §2.2.3.2 Known regions. */
export const BAT_REGION_GUID = '2dc27766-f623-4200-9d64-115e9bfd4a08';
export const METADATA_REGION_GUID = '8b7ca206-4790-4b9a-b8fe-575f050f886e';

export interface RegionEntry {
  guid: string;
  fileOffset: number;
  length: number;
  required: boolean;
}

export type RegionTableDecode = { ok: true; entries: RegionEntry[] } | { ok: false; reason: string };

export function decodeRegionTable(buf: Uint8Array, file: string, offset: number): RegionTableDecode {
  if (asciiAt(buf, 0, 4) !== SIGNATURE) return { ok: false, reason: 'signature is not "regi"' };
  const dv = view(buf);
  const stored = dv.getUint32(4, true);
  const computed = crc32cWithZeroedField(buf.subarray(0, REGION_TABLE_SIZE), 4);
  if (stored !== computed) return { ok: false, reason: `checksum mismatch (stored 0x${stored.toString(16)}, computed 0x${computed.toString(16)})` };
  const count = dv.getUint32(8, true);
  if (count > MAX_REGION_ENTRIES) return { ok: false, reason: `entry count ${count} exceeds ${MAX_REGION_ENTRIES}` };
  const entries: RegionEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    entries.push({
      guid: guidToString(buf, at),
      fileOffset: toSafeNumber(dv.getBigUint64(at + 16, true), 'region FileOffset', file, offset + at + 16),
      length: dv.getUint32(at + 24, true),
      required: (dv.getUint32(at + 28, true) & 1) === 1,
    });
  }
  return { ok: true, entries };
}

export function encodeRegionTable(entries: RegionEntry[]): Uint8Array {
  const buf = new Uint8Array(REGION_TABLE_SIZE);
  const dv = view(buf);
  writeAscii(buf, 0, SIGNATURE);
  dv.setUint32(8, entries.length, true);
  entries.forEach((e, i) => {
    const at = 16 + i * 32;
    writeGuid(buf, at, e.guid);
    dv.setBigUint64(at + 16, BigInt(e.fileOffset), true);
    dv.setUint32(at + 24, e.length, true);
    dv.setUint32(at + 28, e.required ? 1 : 0, true);
  });
  dv.setUint32(4, crc32cWithZeroedField(buf, 4), true);
  return buf;
}
