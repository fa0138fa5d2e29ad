import type { ByteSource } from '../../io/byte-source.js';
import { alignUp, isPowerOfTwo, toSafeNumber } from '../../io/binary.js';
import { DiskchainError, corrupt } from '../../io/errors.js';
import type { DiskType, Finding, ParentLocatorEntry, ParentReference } from '../types.js';
import { batByteLength, decodeBat, UNALLOCATED } from './bat.js';
import {
  DISK_TYPE_DIFFERENCING, DISK_TYPE_DYNAMIC, DISK_TYPE_FIXED, DYNAMIC_HEADER_COOKIE, DYNAMIC_HEADER_SIZE, FOOTER_SIZE,
  HEADER_VERSION, MAX_BAT_ENTRIES, MAX_BLOCK_SIZE, MAX_LOCATOR_BYTES, MAX_OPEN_SIZE, MIN_BLOCK_SIZE, NO_OFFSET, OLD_FOOTER_SIZE, SECTOR,
} from './constants.js';
import { decodeDynamicHeader, dynamicHeaderChecksumOk, type DynamicHeader } from './dynamic-header.js';
import { decodeFooter, footerLooksValid, hasFooterCookie, type VhdFooter } from './footer.js';
import { chsSectors, isMaxGeometry } from './geometry.js';
import { decodeLocatorPath, isKnownPlatform, isUnusedEntry, locatorSpaceBytes, PLATFORM_W2KU, PLATFORM_W2RU, toParentLocator, type LocatorEntry } from './parent-locator.js';
import { bitmapByteLength } from './sector-bitmap.js';

export type FooterState = 'ok' | 'old511' | 'torn' | 'missing';

export interface ParsedLocator {
  index: number;
  entry: LocatorEntry;
  path?: string;
  problem?: string;
}

/** Everything learnt from a VHD's metadata: the result of validating footer, header, BAT and locators. */
export interface VhdLayout {
  file: string;
  fileSize: number;
  footer: VhdFooter;
  /** The 512 bytes of the footer in use (a 511-byte footer is zero-padded). */
  footerBytes: Uint8Array;
  /** Where the footer in use lies, and whether it is the end footer or the copy at offset 0. */
  footerOffset: number;
  footerSource: 'end' | 'copy';
  endFooterState: FooterState;
  /** The copy at offset 0 (dynamic/differencing only): valid and identical to the footer in use? */
  copyState: 'same' | 'differs' | 'invalid' | 'n/a';
  diskType: DiskType;
  virtualSize: number;
  header?: DynamicHeader;
  headerOffset: number;
  tableOffset: number;
  /** BAT entries that cover the virtual disk (the only ones read). */
  blockCount: number;
  blockSize: number;
  bitmapSize: number;
  bat: Uint32Array;
  locators: ParsedLocator[];
  parent?: ParentReference;
  /** End of the furthest metadata structure (footer copy, header, BAT, locator data). */
  metadataEnd: number;
  /** End of the furthest allocated block. */
  dataEnd: number;
  /** Non-fatal problems noticed while parsing. */
  findings: Finding[];
}

interface Region {
  name: string;
  start: number;
  end: number;
}

/** Reads and validates a VHD's metadata. Throws a typed DiskchainError on anything it cannot use. */
export async function parseVhd(source: ByteSource): Promise<VhdLayout> {
  const file = source.name;
  const findings: Finding[] = [];
  const note = (severity: Finding['severity'], code: string, message: string, offset?: number): void => {
    findings.push({ severity, code, message, file, ...(offset !== undefined ? { offset } : {}) });
  };
  const fileSize = await source.size();
  if (fileSize < OLD_FOOTER_SIZE) throw new DiskchainError('TRUNCATED', `file of ${fileSize} bytes is too small to be a VHD`, { file, offset: 0 });

  // Spec, Hard Disk Footer Format: the footer is the last 512 bytes (511 on pre-2004 disks).
  const { state: endFooterState, bytes: endBytes, offset: endOffset } = await readEndFooter(source, fileSize);
  const copyBytes = new Uint8Array(FOOTER_SIZE);
  if (fileSize >= FOOTER_SIZE) await source.read(copyBytes, 0);
  const copyValid = footerLooksValid(copyBytes);
  const copyType = copyValid ? decodeFooter(copyBytes).diskType : 0;

  let footerBytes: Uint8Array;
  let footerOffset: number;
  let footerSource: 'end' | 'copy';
  if (endFooterState === 'ok' || endFooterState === 'old511') {
    footerBytes = endBytes;
    footerOffset = endOffset;
    footerSource = 'end';
  } else if (copyValid && (copyType === DISK_TYPE_DYNAMIC || copyType === DISK_TYPE_DIFFERENCING)) {
    // Dynamic disks keep a copy of the footer at offset 0 for exactly this case.
    footerBytes = copyBytes;
    footerOffset = 0;
    footerSource = 'copy';
    note('warning', endFooterState === 'torn' ? 'VHD_FOOTER_TORN' : 'VHD_FOOTER_MISSING',
      `the footer at the end of the file is ${endFooterState === 'torn' ? 'damaged (bad checksum)' : 'missing'}; using the copy at offset 0`, endOffset);
  } else if (endFooterState === 'torn') {
    throw corrupt('VHD footer checksum mismatch and no valid copy at offset 0', file, endOffset);
  } else {
    throw corrupt('no VHD footer (cookie "conectix") at the end of the file or at offset 0', file, endOffset);
  }
  const footer = decodeFooter(footerBytes);
  if (endFooterState === 'old511') note('info', 'VHD_FOOTER_511', 'the file ends with a 511-byte footer (made before Virtual PC 2004)', endOffset);

  // Spec: File Format Version major must be 1; Disk Type 2, 3 or 4.
  if (footer.fileFormatVersion >>> 16 !== 1) {
    throw new DiskchainError('UNSUPPORTED', `VHD file format version 0x${footer.fileFormatVersion.toString(16)} is not 1.x`, { file, offset: footerOffset + 12 });
  }
  const diskType: DiskType | undefined = footer.diskType === DISK_TYPE_FIXED ? 'fixed' : footer.diskType === DISK_TYPE_DYNAMIC ? 'dynamic' : footer.diskType === DISK_TYPE_DIFFERENCING ? 'differencing' : undefined;
  if (!diskType) throw new DiskchainError('UNSUPPORTED', `VHD disk type ${footer.diskType} is not fixed (2), dynamic (3) or differencing (4)`, { file, offset: footerOffset + 60 });
  if (footer.currentSize > BigInt(MAX_OPEN_SIZE)) {
    throw new DiskchainError('UNSUPPORTED', `VHD current size ${footer.currentSize} is beyond what a VHD can address`, { file, offset: footerOffset + 48 });
  }
  const virtualSize = Number(footer.currentSize);
  if (virtualSize % SECTOR !== 0) throw corrupt(`VHD current size ${virtualSize} is not a whole number of sectors`, file, footerOffset + 48);
  if ((footer.features & 2) === 0) note('info', 'VHD_FEATURES_RESERVED', 'the footer Features field lacks the reserved bit 0x2', footerOffset + 8);
  if (footer.savedState !== 0) note('warning', 'VHD_SAVED_STATE', 'the footer Saved State flag is set (a saved virtual machine owns this disk)', footerOffset + 84);
  const chs = chsSectors(footer.geometry) * SECTOR;
  // The maximum geometry means "size unknown to CHS" (QEMU then uses Current Size; Disk2vhd writes it).
  if (chs > virtualSize && !isMaxGeometry(footer.geometry)) note('warning', 'VHD_GEOMETRY', `the CHS geometry describes ${chs} bytes, more than the current size ${virtualSize}`, footerOffset + 56);

  let copyState: VhdLayout['copyState'] = 'n/a';
  if (diskType !== 'fixed') {
    copyState = !copyValid ? 'invalid' : Buffer.compare(copyBytes, footerBytes) === 0 ? 'same' : 'differs';
    if (copyState !== 'same') note('warning', 'VHD_FOOTER_COPY', copyState === 'invalid' ? 'the footer copy at offset 0 is missing or damaged' : 'the footer copy at offset 0 differs from the end footer', 0);
  }

  const base = { file, fileSize, footer, footerBytes, footerOffset, footerSource, endFooterState, copyState, diskType, virtualSize, findings };
  if (diskType === 'fixed') {
    if (endOffset < virtualSize) throw new DiskchainError('TRUNCATED', `fixed VHD holds ${endOffset} data bytes, its current size is ${virtualSize}`, { file, offset: endOffset });
    if (endOffset > virtualSize) note('warning', 'VHD_FIXED_EXTRA', `${endOffset - virtualSize} bytes lie between the disk data and the footer`, virtualSize);
    return { ...base, headerOffset: 0, tableOffset: 0, blockCount: 0, blockSize: 0, bitmapSize: 0, bat: new Uint32Array(0), locators: [], metadataEnd: 0, dataEnd: virtualSize };
  }
  return parseDynamic(source, base, note);
}

async function readEndFooter(source: ByteSource, fileSize: number): Promise<{ state: FooterState; bytes: Uint8Array; offset: number }> {
  const bytes = new Uint8Array(FOOTER_SIZE);
  if (fileSize >= FOOTER_SIZE) {
    await source.read(bytes, fileSize - FOOTER_SIZE);
    if (footerLooksValid(bytes)) return { state: 'ok', bytes, offset: fileSize - FOOTER_SIZE };
  }
  const old = new Uint8Array(FOOTER_SIZE);
  await source.read(old.subarray(0, OLD_FOOTER_SIZE), fileSize - OLD_FOOTER_SIZE);
  if (footerLooksValid(old)) return { state: 'old511', bytes: old, offset: fileSize - OLD_FOOTER_SIZE };
  const torn = hasFooterCookie(bytes) || hasFooterCookie(old);
  return { state: torn ? 'torn' : 'missing', bytes, offset: Math.max(0, fileSize - FOOTER_SIZE) };
}

type Base = Omit<VhdLayout, 'headerOffset' | 'tableOffset' | 'blockCount' | 'blockSize' | 'bitmapSize' | 'bat' | 'locators' | 'metadataEnd' | 'dataEnd' | 'header' | 'parent'>;

async function parseDynamic(source: ByteSource, base: Base, note: (s: Finding['severity'], c: string, m: string, o?: number) => void): Promise<VhdLayout> {
  const { file, fileSize, footer, footerOffset, footerSource, virtualSize } = base;
  // Spec, Dynamic Disk Header Format: at the footer's Data Offset.
  if (footer.dataOffset === NO_OFFSET) throw corrupt('dynamic VHD footer has no Data Offset', file, footerOffset + 16);
  const headerOffset = toSafeNumber(footer.dataOffset, 'dynamic header offset', file, footerOffset + 16);
  if (headerOffset < FOOTER_SIZE || headerOffset + DYNAMIC_HEADER_SIZE > fileSize) {
    throw corrupt(`dynamic header offset ${headerOffset} is outside the file`, file, footerOffset + 16);
  }
  const hbuf = new Uint8Array(DYNAMIC_HEADER_SIZE);
  await source.read(hbuf, headerOffset);
  const header = decodeDynamicHeader(hbuf);
  if (header.cookie !== DYNAMIC_HEADER_COOKIE) throw corrupt('dynamic header cookie "cxsparse" not found', file, headerOffset);
  if (!dynamicHeaderChecksumOk(hbuf)) throw corrupt('dynamic header checksum mismatch', file, headerOffset + 36);
  if (header.headerVersion !== HEADER_VERSION) {
    throw new DiskchainError('UNSUPPORTED', `dynamic header version 0x${header.headerVersion.toString(16)} is not 1.0`, { file, offset: headerOffset + 24 });
  }
  const blockSize = header.blockSize;
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw corrupt(`block size ${blockSize} is not a power of two between ${MIN_BLOCK_SIZE} and ${MAX_BLOCK_SIZE}`, file, headerOffset + 32);
  }
  const blockCount = Math.ceil(virtualSize / blockSize);
  if (header.maxTableEntries < blockCount) {
    throw corrupt(`max table entries ${header.maxTableEntries} x block size ${blockSize} cannot cover the ${virtualSize}-byte disk`, file, headerOffset + 28);
  }
  if (blockCount > MAX_BAT_ENTRIES) throw new DiskchainError('UNSUPPORTED', `${blockCount} BAT entries is more than the ${MAX_BAT_ENTRIES} supported`, { file, offset: headerOffset + 28 });
  if (header.maxTableEntries > blockCount) note('info', 'VHD_BAT_SLACK', `max table entries ${header.maxTableEntries} exceeds the ${blockCount} the disk needs`, headerOffset + 28);

  const tableOffset = toSafeNumber(header.tableOffset, 'BAT offset', file, headerOffset + 16);
  const batBytes = batByteLength(blockCount);
  const regions: Region[] = [
    { name: 'footer copy', start: 0, end: FOOTER_SIZE },
    { name: 'dynamic header', start: headerOffset, end: headerOffset + DYNAMIC_HEADER_SIZE },
  ];
  if (tableOffset + blockCount * 4 > fileSize) throw corrupt(`BAT (${blockCount} entries at ${tableOffset}) runs past the end of the file`, file, headerOffset + 16);
  const batRegion: Region = { name: 'BAT', start: tableOffset, end: tableOffset + blockCount * 4 };
  for (const r of regions) if (overlaps(batRegion, r)) throw corrupt(`BAT overlaps the ${r.name}`, file, tableOffset);
  regions.push(batRegion);
  const batBuf = new Uint8Array(blockCount * 4);
  await source.read(batBuf, tableOffset);
  const bat = decodeBat(batBuf, blockCount);

  const locators = await readLocators(source, header, headerOffset, base.diskType === 'differencing', note);
  let metadataEnd = Math.max(headerOffset + DYNAMIC_HEADER_SIZE, tableOffset + batBytes);
  for (const l of locators) {
    if (l.problem || isUnusedEntry(l.entry)) continue;
    const start = Number(l.entry.platformDataOffset);
    regions.push({ name: `parent locator ${l.index}`, start, end: start + l.entry.platformDataLength });
    metadataEnd = Math.max(metadataEnd, start + Math.max(l.entry.platformDataLength, Math.min(locatorSpaceBytes(l.entry), MAX_LOCATOR_BYTES)));
  }

  // Spec, Block Allocation Table: each entry is the sector of the block's bitmap; data follows.
  const bitmapSize = bitmapByteLength(blockSize);
  const span = bitmapSize + blockSize;
  const limit = footerSource === 'end' ? footerOffset : fileSize;
  const starts: number[] = [];
  let dataEnd = 0;
  for (let i = 0; i < blockCount; i++) {
    const e = bat[i]!;
    if (e === UNALLOCATED) continue;
    const start = e * SECTOR;
    const end = start + span;
    if (end > limit) throw corrupt(`BAT entry ${i} puts block data at ${start}..${end}, past the end of the disk data (${limit})`, file, tableOffset + i * 4);
    for (const r of regions) if (overlaps({ name: '', start, end }, r)) throw corrupt(`BAT entry ${i} puts block data over the ${r.name}`, file, tableOffset + i * 4);
    starts.push(start);
    dataEnd = Math.max(dataEnd, end);
  }
  starts.sort((a, b) => a - b);
  for (let i = 1; i < starts.length; i++) {
    if (starts[i]! - starts[i - 1]! < span) throw corrupt(`two BAT entries share file space at ${starts[i]}`, file, starts[i]);
  }
  const end = Math.max(metadataEnd, dataEnd);
  // Windows pads to 4 KiB; a gap of a whole block or more is what an interrupted allocation leaves.
  if (footerSource === 'end' && footerOffset - alignUp(end, SECTOR) >= span) {
    note('info', 'VHD_UNREFERENCED_SPACE', `${footerOffset - alignUp(end, SECTOR)} bytes before the footer belong to no block (an interrupted allocation leaves these)`, alignUp(end, SECTOR));
  }
  if (footerSource === 'copy' && fileSize > alignUp(end, SECTOR)) {
    note('warning', 'VHD_TRAILING_DATA', `${fileSize - alignUp(end, SECTOR)} bytes at the end of the file belong to no block`, alignUp(end, SECTOR));
  }

  const layout: VhdLayout = {
    ...base, header, headerOffset, tableOffset, blockCount, blockSize, bitmapSize, bat, locators, metadataEnd, dataEnd,
  };
  if (base.diskType === 'differencing') {
    const entries: ParentLocatorEntry[] = [];
    for (const l of locators) {
      if (l.path === undefined) continue;
      const p = toParentLocator(l.entry.platformCode, l.path);
      if (p) entries.push(p);
    }
    if (entries.length === 0) note('warning', 'VHD_NO_PARENT_LOCATOR', 'the differencing disk has no usable W2ru/W2ku parent locator', headerOffset + 576);
    layout.parent = { locators: entries, expected: { format: 'vhd', uniqueId: header.parentUniqueId, timestamp: header.parentTimeStamp } };
  }
  return layout;
}

async function readLocators(
  source: ByteSource, header: DynamicHeader, headerOffset: number, differencing: boolean,
  note: (s: Finding['severity'], c: string, m: string, o?: number) => void,
): Promise<ParsedLocator[]> {
  const fileSize = await source.size();
  const out: ParsedLocator[] = [];
  for (let index = 0; index < header.parentLocators.length; index++) {
    const entry = header.parentLocators[index]!;
    if (isUnusedEntry(entry)) continue;
    const at = headerOffset + 576 + index * 24;
    const parsed: ParsedLocator = { index, entry };
    out.push(parsed);
    const code = entry.platformCode;
    const problem = (p: string): void => {
      parsed.problem = p;
      note('warning', 'VHD_LOCATOR', `parent locator ${index} (${JSON.stringify(code)}): ${p}`, at);
    };
    if (!differencing) {
      note('info', 'VHD_LOCATOR_UNUSED', `parent locator ${index} (${JSON.stringify(code)}) on a disk that has no parent`, at);
    }
    if (!isKnownPlatform(code)) {
      problem('unknown platform code');
      continue;
    }
    const offset = entry.platformDataOffset;
    const length = entry.platformDataLength;
    if (length > MAX_LOCATOR_BYTES) {
      problem(`data length ${length} is absurd`);
      continue;
    }
    if (offset > BigInt(fileSize) || Number(offset) + length > fileSize) {
      problem(`data (${length} bytes at ${offset}) lies outside the file`);
      continue;
    }
    if (Number(offset) < FOOTER_SIZE || (Number(offset) < headerOffset + DYNAMIC_HEADER_SIZE && Number(offset) + length > headerOffset)) {
      problem('data overlaps the footer copy or the dynamic header');
      continue;
    }
    if (code !== PLATFORM_W2RU && code !== PLATFORM_W2KU) continue;
    const data = new Uint8Array(length);
    await source.read(data, Number(offset));
    if (length % 2 !== 0) note('warning', 'VHD_LOCATOR', `parent locator ${index} (${JSON.stringify(code)}): UTF-16 path has an odd byte length`, at);
    const path = decodeLocatorPath(data);
    if (path.length === 0) problem('empty path');
    else parsed.path = path;
  }
  return out;
}

function overlaps(a: Region, b: Region): boolean {
  return a.start < b.end && b.start < a.end;
}
