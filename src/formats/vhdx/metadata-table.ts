import { asciiAt, view, writeAscii } from '../../io/binary.js';
import { corrupt } from '../../io/errors.js';
import { guidToString, writeGuid } from '../../io/guid.js';

/** §2.6.1 Metadata table: a 64 KiB table at the start of the metadata region, items after it. */
export const METADATA_TABLE_SIZE = 64 * 1024;
export const MAX_METADATA_ENTRIES = 2047;
/** §2.6.1.2 an item is at most 1 MiB. */
export const MAX_METADATA_ITEM_LENGTH = 1024 * 1024;
const SIGNATURE = 'metadata';

export interface MetadataEntry {
  itemId: string;
  /** Offset from the start of the metadata region. */
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

/** Decodes the table; checks only what the table alone can tell (signature, count, bounds). */
export function decodeMetadataTable(buf: Uint8Array, regionLength: number, file: string, regionOffset: number): MetadataEntry[] {
  if (asciiAt(buf, 0, 8) !== SIGNATURE) throw corrupt('metadata table signature is not "metadata"', file, regionOffset);
  const dv = view(buf);
  const count = dv.getUint16(10, true);
  if (count > MAX_METADATA_ENTRIES) throw corrupt(`metadata entry count ${count} exceeds ${MAX_METADATA_ENTRIES}`, file, regionOffset + 10);
  const entries: MetadataEntry[] = [];
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const at = 32 + i * 32;
    const flags = dv.getUint32(at + 24, true);
    const entry: MetadataEntry = {
      itemId: guidToString(buf, at),
      offset: dv.getUint32(at + 16, true),
      length: dv.getUint32(at + 20, true),
      isUser: (flags & 1) !== 0,
      isVirtualDisk: (flags & 2) !== 0,
      isRequired: (flags & 4) !== 0,
    };
    const key = `${entry.itemId}/${entry.isUser}`;
    if (seen.has(key)) throw corrupt(`metadata item ${entry.itemId} appears twice`, file, regionOffset + at);
    seen.add(key);
    if (entry.length > 0) {
      if (entry.offset < METADATA_TABLE_SIZE || entry.length > MAX_METADATA_ITEM_LENGTH || entry.offset + entry.length > regionLength) {
        throw corrupt(`metadata item ${entry.itemId} (offset ${entry.offset}, length ${entry.length}) lies outside the metadata region`, file, regionOffset + at);
      }
    } else if (entry.offset !== 0) {
      throw corrupt(`metadata item ${entry.itemId} has length 0 but offset ${entry.offset}`, file, regionOffset + at);
    }
    entries.push(entry);
  }
  return entries;
}

export function encodeMetadataTable(entries: MetadataEntry[]): Uint8Array {
  const buf = new Uint8Array(METADATA_TABLE_SIZE);
  const dv = view(buf);
  writeAscii(buf, 0, SIGNATURE);
  dv.setUint16(10, entries.length, true);
  entries.forEach((e, i) => {
    const at = 32 + i * 32;
    writeGuid(buf, at, e.itemId);
    dv.setUint32(at + 16, e.offset, true);
    dv.setUint32(at + 20, e.length, true);
    dv.setUint32(at + 24, (e.isUser ? 1 : 0) | (e.isVirtualDisk ? 2 : 0) | (e.isRequired ? 4 : 0), true);
  });
  return buf;
}
