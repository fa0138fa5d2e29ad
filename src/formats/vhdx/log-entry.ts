import { asciiAt, view, writeAscii } from '../../io/binary.js';
import { crc32cWithZeroedField } from '../../io/crc32c.js';
import { guidToString, writeGuid } from '../../io/guid.js';

/** §2.3.1 Log entries: 4 KiB sectors; a 64-byte header and 32-byte descriptors first, then data sectors. */
export const LOG_SECTOR = 4096;
export const ENTRY_HEADER_SIZE = 64;
const DESCRIPTOR_SIZE = 32;

export interface LogEntryHeader {
  checksum: number;
  entryLength: number;
  tail: number;
  sequenceNumber: bigint;
  descriptorCount: number;
  logGuid: string;
  flushedFileOffset: bigint;
  lastFileOffset: bigint;
}

/** A descriptor decoded: a 4 KiB page to write (data) or a range to zero. */
export type LogDescriptor =
  | { kind: 'data'; fileOffset: bigint; sequenceNumber: bigint; leading: Uint8Array; trailing: Uint8Array }
  | { kind: 'zero'; fileOffset: bigint; sequenceNumber: bigint; zeroLength: bigint };

export function descriptorSectors(descriptorCount: number): number {
  return Math.ceil((ENTRY_HEADER_SIZE + descriptorCount * DESCRIPTOR_SIZE) / LOG_SECTOR);
}

export function decodeEntryHeader(sector: Uint8Array): LogEntryHeader | undefined {
  if (asciiAt(sector, 0, 4) !== 'loge') return undefined;
  const dv = view(sector);
  return {
    checksum: dv.getUint32(4, true),
    entryLength: dv.getUint32(8, true),
    tail: dv.getUint32(12, true),
    sequenceNumber: dv.getBigUint64(16, true),
    descriptorCount: dv.getUint32(24, true),
    logGuid: guidToString(sector, 32),
    flushedFileOffset: dv.getBigUint64(48, true),
    lastFileOffset: dv.getBigUint64(56, true),
  };
}

/** Decodes descriptor `i` of an entry; undefined when its signature is neither "desc" nor "zero". */
export function decodeDescriptor(entry: Uint8Array, i: number): LogDescriptor | undefined {
  const at = ENTRY_HEADER_SIZE + i * DESCRIPTOR_SIZE;
  const dv = view(entry);
  const sig = asciiAt(entry, at, 4);
  if (sig === 'desc') {
    return {
      kind: 'data',
      trailing: entry.slice(at + 4, at + 8),
      leading: entry.slice(at + 8, at + 16),
      fileOffset: dv.getBigUint64(at + 16, true),
      sequenceNumber: dv.getBigUint64(at + 24, true),
    };
  }
  if (sig === 'zero') {
    return {
      kind: 'zero',
      zeroLength: dv.getBigUint64(at + 8, true),
      fileOffset: dv.getBigUint64(at + 16, true),
      sequenceNumber: dv.getBigUint64(at + 24, true),
    };
  }
  return undefined;
}

/** §2.3.1.4 A data sector: "data", SequenceHigh, 4084 bytes, SequenceLow. */
export function dataSectorSequence(sector: Uint8Array): bigint | undefined {
  if (asciiAt(sector, 0, 4) !== 'data') return undefined;
  const dv = view(sector);
  return (BigInt(dv.getUint32(4, true)) << 32n) | BigInt(dv.getUint32(4092, true));
}

/** The 4 KiB page a data descriptor and its data sector rebuild. */
export function rebuildPage(descriptor: { leading: Uint8Array; trailing: Uint8Array }, sector: Uint8Array): Uint8Array {
  const page = new Uint8Array(LOG_SECTOR);
  page.set(descriptor.leading, 0);
  page.set(sector.subarray(8, 4092), 8);
  page.set(descriptor.trailing, 4092);
  return page;
}

export function entryChecksum(entry: Uint8Array): number {
  return crc32cWithZeroedField(entry, 4);
}

export interface EntryToWrite {
  tail: number;
  sequenceNumber: bigint;
  logGuid: string;
  flushedFileOffset: number;
  lastFileOffset: number;
  pages: [number, Uint8Array][];
}

/** Builds a whole entry of data descriptors (we never need zero descriptors). */
export function encodeEntry(e: EntryToWrite): Uint8Array {
  const headerSectors = descriptorSectors(e.pages.length);
  const entry = new Uint8Array((headerSectors + e.pages.length) * LOG_SECTOR);
  const dv = view(entry);
  writeAscii(entry, 0, 'loge');
  dv.setUint32(8, entry.length, true);
  dv.setUint32(12, e.tail, true);
  dv.setBigUint64(16, e.sequenceNumber, true);
  dv.setUint32(24, e.pages.length, true);
  writeGuid(entry, 32, e.logGuid);
  dv.setBigUint64(48, BigInt(e.flushedFileOffset), true);
  dv.setBigUint64(56, BigInt(e.lastFileOffset), true);
  const seqHigh = Number(e.sequenceNumber >> 32n);
  const seqLow = Number(e.sequenceNumber & 0xffffffffn);
  e.pages.forEach(([fileOffset, page], i) => {
    const at = ENTRY_HEADER_SIZE + i * DESCRIPTOR_SIZE;
    writeAscii(entry, at, 'desc');
    entry.set(page.subarray(4092, 4096), at + 4);
    entry.set(page.subarray(0, 8), at + 8);
    dv.setBigUint64(at + 16, BigInt(fileOffset), true);
    dv.setBigUint64(at + 24, e.sequenceNumber, true);
    const sector = (headerSectors + i) * LOG_SECTOR;
    writeAscii(entry, sector, 'data');
    dv.setUint32(sector + 4, seqHigh, true);
    entry.set(page.subarray(8, 4092), sector + 8);
    dv.setUint32(sector + 4092, seqLow, true);
  });
  dv.setUint32(4, entryChecksum(entry), true);
  return entry;
}
