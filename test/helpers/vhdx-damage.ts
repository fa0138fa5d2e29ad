/**
 * Tools to damage a VHDX image held in memory, structure by structure, with valid checksums where
 * the damage is meant to be semantic (so the reader must notice the meaning, not a bad CRC).
 * Everything is located by parsing the image itself, so the same damage applies to our files and to
 * files made by Windows.
 */
import { view } from '../../src/io/binary.js';
import { randomGuid, writeGuid } from '../../src/io/guid.js';
import { decodeBatEntry, encodeBatEntry, BatLayout, type BatEntry } from '../../src/formats/vhdx/bat.js';
import { decodeHeader, encodeHeader, HEADER_OFFSETS, HEADER_SIZE, type VhdxHeader } from '../../src/formats/vhdx/header.js';
import { encodeEntry } from '../../src/formats/vhdx/log-entry.js';
import { decodeMetadataTable, encodeMetadataTable, METADATA_TABLE_SIZE, type MetadataEntry } from '../../src/formats/vhdx/metadata-table.js';
import { decodeFileParameters, FILE_PARAMETERS_GUID, LOGICAL_SECTOR_SIZE_GUID, VIRTUAL_DISK_SIZE_GUID } from '../../src/formats/vhdx/metadata-items.js';
import { BAT_REGION_GUID, decodeRegionTable, encodeRegionTable, METADATA_REGION_GUID, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE, type RegionEntry } from '../../src/formats/vhdx/region-table.js';

export interface CurrentHeaderInfo {
  slot: 0 | 1;
  header: VhdxHeader;
}

export function headers(img: Uint8Array): ({ ok: true; header: VhdxHeader } | { ok: false; reason: string })[] {
  return HEADER_OFFSETS.map((at) => decodeHeader(img.subarray(at, at + HEADER_SIZE), 'img', at));
}

export function currentHeader(img: Uint8Array): CurrentHeaderInfo {
  const hs = headers(img);
  let best: CurrentHeaderInfo | undefined;
  hs.forEach((h, slot) => {
    if (h.ok && (!best || h.header.sequenceNumber > best.header.sequenceNumber)) best = { slot: slot as 0 | 1, header: h.header };
  });
  if (!best) throw new Error('image has no valid header');
  return best;
}

/** Writes `header` (with a fresh checksum) into slot `slot`. */
export function putHeader(img: Uint8Array, slot: 0 | 1, header: VhdxHeader): void {
  img.set(encodeHeader(header), HEADER_OFFSETS[slot]);
}

/** A header update as a writer would make it: the non-current slot gets sequence + 1 and the changes. */
export function updateHeader(img: Uint8Array, changes: Partial<VhdxHeader>): VhdxHeader {
  const cur = currentHeader(img);
  const next: VhdxHeader = { ...cur.header, ...changes, sequenceNumber: cur.header.sequenceNumber + 1n };
  putHeader(img, cur.slot === 0 ? 1 : 0, next);
  return next;
}

export function regions(img: Uint8Array): RegionEntry[] {
  for (const at of REGION_TABLE_OFFSETS) {
    const d = decodeRegionTable(img.subarray(at, at + REGION_TABLE_SIZE), 'img', at);
    if (d.ok) return d.entries;
  }
  throw new Error('image has no valid region table');
}

/** Rewrites both region tables (valid checksums) with `entries`. */
export function putRegions(img: Uint8Array, entries: RegionEntry[]): void {
  const table = encodeRegionTable(entries);
  for (const at of REGION_TABLE_OFFSETS) img.set(table, at);
}

export function batRegion(img: Uint8Array): RegionEntry {
  return regions(img).find((r) => r.guid === BAT_REGION_GUID)!;
}

export function metadataRegion(img: Uint8Array): RegionEntry {
  return regions(img).find((r) => r.guid === METADATA_REGION_GUID)!;
}

export function metadataEntries(img: Uint8Array): MetadataEntry[] {
  const m = metadataRegion(img);
  return decodeMetadataTable(img.subarray(m.fileOffset, m.fileOffset + METADATA_TABLE_SIZE), m.length, 'img', m.fileOffset);
}

export function putMetadataTable(img: Uint8Array, entries: MetadataEntry[]): void {
  img.set(encodeMetadataTable(entries), metadataRegion(img).fileOffset);
}

/** The absolute file offset of a system metadata item's data. */
export function itemOffset(img: Uint8Array, itemId: string): number {
  const e = metadataEntries(img).find((x) => x.itemId === itemId && !x.isUser);
  if (!e) throw new Error(`no metadata item ${itemId}`);
  return metadataRegion(img).fileOffset + e.offset;
}

export function setU32Item(img: Uint8Array, itemId: string, value: number, within = 0): void {
  view(img).setUint32(itemOffset(img, itemId) + within, value, true);
}

export function setU64Item(img: Uint8Array, itemId: string, value: bigint): void {
  view(img).setBigUint64(itemOffset(img, itemId), value, true);
}

export function setBlockSize(img: Uint8Array, blockSize: number): void {
  setU32Item(img, FILE_PARAMETERS_GUID, blockSize);
}

export function setLogicalSectorSize(img: Uint8Array, n: number): void {
  setU32Item(img, LOGICAL_SECTOR_SIZE_GUID, n);
}

export function setVirtualSize(img: Uint8Array, n: bigint): void {
  setU64Item(img, VIRTUAL_DISK_SIZE_GUID, n);
}

/** BAT geometry from the image's own metadata. */
export function batLayout(img: Uint8Array): BatLayout {
  const dv = view(img);
  const fp = decodeFileParameters(img.subarray(itemOffset(img, FILE_PARAMETERS_GUID), itemOffset(img, FILE_PARAMETERS_GUID) + 8), 'img', 0);
  const lss = dv.getUint32(itemOffset(img, LOGICAL_SECTOR_SIZE_GUID), true);
  const vs = Number(dv.getBigUint64(itemOffset(img, VIRTUAL_DISK_SIZE_GUID), true));
  return new BatLayout(vs, fp.blockSize, lss, fp.hasParent);
}

/** File offset of the BAT entry of payload block `block`. */
export function payloadEntryOffset(img: Uint8Array, block: number): number {
  return batRegion(img).fileOffset + batLayout(img).payloadIndex(block) * 8;
}

export function getPayloadEntry(img: Uint8Array, block: number): BatEntry {
  return decodeBatEntry(img, payloadEntryOffset(img, block));
}

export function setPayloadEntry(img: Uint8Array, block: number, entry: BatEntry): void {
  encodeBatEntry(img, payloadEntryOffset(img, block), entry);
}

/** Appends an extra metadata table entry (data placed after the existing items). */
export function addMetadataItem(img: Uint8Array, entry: Omit<MetadataEntry, 'offset' | 'length'>, data: Uint8Array): void {
  const entries = metadataEntries(img);
  const end = Math.max(METADATA_TABLE_SIZE, ...entries.map((e) => e.offset + e.length));
  const offset = Math.ceil(end / 8) * 8;
  img.set(data, metadataRegion(img).fileOffset + offset);
  putMetadataTable(img, [...entries, { ...entry, offset, length: data.length }]);
}

/**
 * Makes the log dirty with one valid entry (correct checksums, sequence 1, its own tail) carrying
 * `pages` ([file offset, 4 KiB page]) and points the current header's LogGuid at it.
 */
export function dirtyLog(img: Uint8Array, pages: [number, Uint8Array][], options: { flushedFileOffset?: number; lastFileOffset?: number } = {}): string {
  const { header } = currentHeader(img);
  const logGuid = randomGuid();
  const entry = encodeEntry({
    tail: 0,
    sequenceNumber: 1n,
    logGuid,
    flushedFileOffset: options.flushedFileOffset ?? img.length,
    lastFileOffset: options.lastFileOffset ?? img.length,
    pages,
  });
  if (entry.length > header.logLength) throw new Error('entry does not fit the log');
  img.set(entry, header.logOffset);
  updateHeader(img, { logGuid });
  return logGuid;
}

export { randomGuid, HEADER_OFFSETS, REGION_TABLE_OFFSETS, BAT_REGION_GUID, METADATA_REGION_GUID };

/** A descriptor for buildLogEntry: a whole 4 KiB page, or a run of zeros. */
export type RawDescriptor = { kind: 'data'; fileOffset: number; page: Uint8Array } | { kind: 'zero'; fileOffset: number; length: number };

/**
 * Builds a log entry straight from [MS-VHDX] §2.3.1 (independently of the library's encoder):
 * header, descriptors (data and zero), data sectors, CRC-32C over the whole entry.
 */
export function buildLogEntry(e: { sequenceNumber: bigint; tail: number; logGuid: string; flushedFileOffset: number; lastFileOffset: number; descriptors: RawDescriptor[] }, crc32c: (b: Uint8Array) => number): Uint8Array {
  const headerSectors = Math.ceil((64 + 32 * e.descriptors.length) / 4096);
  const dataCount = e.descriptors.filter((d) => d.kind === 'data').length;
  const entry = new Uint8Array((headerSectors + dataCount) * 4096);
  const dv = new DataView(entry.buffer);
  const ascii = (at: number, s: string): void => {
    for (let i = 0; i < s.length; i++) entry[at + i] = s.charCodeAt(i);
  };
  ascii(0, 'loge');
  dv.setUint32(8, entry.length, true);
  dv.setUint32(12, e.tail, true);
  dv.setBigUint64(16, e.sequenceNumber, true);
  dv.setUint32(24, e.descriptors.length, true);
  writeGuid(entry, 32, e.logGuid);
  dv.setBigUint64(48, BigInt(e.flushedFileOffset), true);
  dv.setBigUint64(56, BigInt(e.lastFileOffset), true);
  let sector = headerSectors;
  e.descriptors.forEach((d, i) => {
    const at = 64 + i * 32;
    if (d.kind === 'zero') {
      ascii(at, 'zero');
      dv.setBigUint64(at + 8, BigInt(d.length), true);
    } else {
      ascii(at, 'desc');
      entry.set(d.page.subarray(4092, 4096), at + 4);
      entry.set(d.page.subarray(0, 8), at + 8);
      const s = sector++ * 4096;
      ascii(s, 'data');
      dv.setUint32(s + 4, Number(e.sequenceNumber >> 32n), true);
      entry.set(d.page.subarray(8, 4092), s + 8);
      dv.setUint32(s + 4092, Number(e.sequenceNumber & 0xffffffffn), true);
    }
    dv.setBigUint64(at + 16, BigInt(d.fileOffset), true);
    dv.setBigUint64(at + 24, e.sequenceNumber, true);
  });
  dv.setUint32(4, crc32c(entry), true);
  return entry;
}

/** Places `entry` in the circular log at `at` (wrapping at the end). */
export function putLogEntry(img: Uint8Array, entry: Uint8Array, at: number): void {
  const { logOffset, logLength } = currentHeader(img).header;
  for (let i = 0; i < entry.length; i += 4096) img.set(entry.subarray(i, i + 4096), logOffset + ((at + i) % logLength));
}
