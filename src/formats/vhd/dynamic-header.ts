import { asciiAt, view, writeAscii } from '../../io/binary.js';
import { vhdChecksum } from './checksum.js';
import { DYNAMIC_HEADER_COOKIE, DYNAMIC_HEADER_SIZE, HEADER_VERSION, NO_OFFSET } from './constants.js';
import { decodeLocatorEntry, encodeLocatorEntry, LOCATOR_ENTRY_COUNT, LOCATOR_ENTRY_SIZE, type LocatorEntry } from './parent-locator.js';
import { uniqueIdToBytes, uniqueIdToString } from './unique-id.js';

/**
 * The Dynamic Disk Header (spec: "Dynamic Disk Header Format"), 1024 big-endian bytes found at
 * the footer's Data Offset on dynamic and differencing disks.
 *
 *   0 Cookie 'cxsparse'         8 Data Offset (u64, unused: all ones)   16 Table Offset (u64)
 *  24 Header Version           28 Max Table Entries    32 Block Size     36 Checksum
 *  40 Parent Unique ID (16)    56 Parent Time Stamp    60 Reserved
 *  64 Parent Unicode Name (512 bytes, UTF-16BE)       576 Parent Locator Entries (8 x 24)
 */
export interface DynamicHeader {
  cookie: string;
  dataOffset: bigint;
  tableOffset: bigint;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUniqueId: string;
  parentTimeStamp: number;
  parentUnicodeName: string;
  parentLocators: LocatorEntry[];
}

export const HEADER_CHECKSUM_OFFSET = 36;
const PARENT_NAME_OFFSET = 64;
const PARENT_NAME_BYTES = 512;
const LOCATORS_OFFSET = 576;

export function decodeDynamicHeader(buf: Uint8Array): DynamicHeader {
  const v = view(buf);
  const locators: LocatorEntry[] = [];
  for (let i = 0; i < LOCATOR_ENTRY_COUNT; i++) {
    locators.push(decodeLocatorEntry(buf.subarray(LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE, LOCATORS_OFFSET + (i + 1) * LOCATOR_ENTRY_SIZE)));
  }
  return {
    cookie: asciiAt(buf, 0, 8),
    dataOffset: v.getBigUint64(8),
    tableOffset: v.getBigUint64(16),
    headerVersion: v.getUint32(24),
    maxTableEntries: v.getUint32(28),
    blockSize: v.getUint32(32),
    checksum: v.getUint32(HEADER_CHECKSUM_OFFSET),
    parentUniqueId: uniqueIdToString(buf, 40),
    parentTimeStamp: v.getUint32(56),
    parentUnicodeName: utf16beAt(buf, PARENT_NAME_OFFSET, PARENT_NAME_BYTES),
    parentLocators: locators,
  };
}

export function dynamicHeaderChecksumOk(buf: Uint8Array): boolean {
  return view(buf).getUint32(HEADER_CHECKSUM_OFFSET) === vhdChecksum(buf, HEADER_CHECKSUM_OFFSET);
}

export interface DynamicHeaderFields {
  tableOffset: number;
  maxTableEntries: number;
  blockSize: number;
  parentUniqueId?: string;
  parentTimeStamp?: number;
  parentUnicodeName?: string;
  parentLocators?: LocatorEntry[];
}

export function encodeDynamicHeader(h: DynamicHeaderFields): Uint8Array {
  const buf = new Uint8Array(DYNAMIC_HEADER_SIZE);
  const v = view(buf);
  writeAscii(buf, 0, DYNAMIC_HEADER_COOKIE);
  v.setBigUint64(8, NO_OFFSET);
  v.setBigUint64(16, BigInt(h.tableOffset));
  v.setUint32(24, HEADER_VERSION);
  v.setUint32(28, h.maxTableEntries >>> 0);
  v.setUint32(32, h.blockSize >>> 0);
  if (h.parentUniqueId !== undefined) buf.set(uniqueIdToBytes(h.parentUniqueId), 40);
  v.setUint32(56, (h.parentTimeStamp ?? 0) >>> 0);
  if (h.parentUnicodeName !== undefined) buf.set(encodeUtf16be(h.parentUnicodeName, PARENT_NAME_BYTES), PARENT_NAME_OFFSET);
  (h.parentLocators ?? []).slice(0, LOCATOR_ENTRY_COUNT).forEach((e, i) => {
    buf.set(encodeLocatorEntry(e), LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE);
  });
  v.setUint32(HEADER_CHECKSUM_OFFSET, vhdChecksum(buf, HEADER_CHECKSUM_OFFSET));
  return buf;
}

export interface ParentFields {
  parentUniqueId: string;
  parentTimeStamp: number;
  parentUnicodeName: string;
  parentLocators: LocatorEntry[];
}

/**
 * A copy of an encoded header with the parent fields (Parent Unique ID, Parent Time Stamp, Parent
 * Unicode Name, the eight Parent Locator Entries) replaced and the checksum recomputed; every other
 * byte is kept as it was.
 */
export function withParentFields(header: Uint8Array, f: ParentFields): Uint8Array {
  const buf = new Uint8Array(header.subarray(0, DYNAMIC_HEADER_SIZE));
  const v = view(buf);
  buf.set(uniqueIdToBytes(f.parentUniqueId), 40);
  v.setUint32(56, f.parentTimeStamp >>> 0);
  buf.fill(0, PARENT_NAME_OFFSET, PARENT_NAME_OFFSET + PARENT_NAME_BYTES);
  buf.set(encodeUtf16be(f.parentUnicodeName, PARENT_NAME_BYTES), PARENT_NAME_OFFSET);
  buf.fill(0, LOCATORS_OFFSET, LOCATORS_OFFSET + LOCATOR_ENTRY_COUNT * LOCATOR_ENTRY_SIZE);
  f.parentLocators.slice(0, LOCATOR_ENTRY_COUNT).forEach((e, i) => buf.set(encodeLocatorEntry(e), LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE));
  v.setUint32(HEADER_CHECKSUM_OFFSET, vhdChecksum(buf, HEADER_CHECKSUM_OFFSET));
  return buf;
}

/** UTF-16BE text up to the first NUL (spec: Parent Unicode Name). */
function utf16beAt(buf: Uint8Array, offset: number, length: number): string {
  let out = '';
  for (let i = offset; i + 1 < offset + length; i += 2) {
    const unit = (buf[i]! << 8) | buf[i + 1]!;
    if (unit === 0) break;
    out += String.fromCharCode(unit);
  }
  return out;
}

/** UTF-16BE bytes of `text`, cut to at most `maxBytes` without splitting a surrogate pair. */
function encodeUtf16be(text: string, maxBytes: number): Uint8Array {
  let units = Math.min(text.length, maxBytes / 2);
  const last = text.charCodeAt(units - 1);
  if (units < text.length && last >= 0xd800 && last <= 0xdbff) units--;
  const out = new Uint8Array(units * 2);
  for (let i = 0; i < units; i++) {
    const c = text.charCodeAt(i);
    out[i * 2] = c >>> 8;
    out[i * 2 + 1] = c & 0xff;
  }
  return out;
}
