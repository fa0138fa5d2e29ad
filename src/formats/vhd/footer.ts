import { asciiAt, view, writeAscii } from '../../io/binary.js';
import { vhdChecksum } from './checksum.js';
import { FOOTER_COOKIE, FOOTER_SIZE, VHD_EPOCH_MS } from './constants.js';
import type { Geometry } from './geometry.js';
import { uniqueIdToBytes, uniqueIdToString } from './unique-id.js';

/**
 * The Hard Disk Footer (spec: "Hard Disk Footer Format"): 512 big-endian bytes at the end of
 * every VHD, with a copy at offset 0 of dynamic and differencing disks.
 *
 *   0 Cookie 'conectix'        8 Features            12 File Format Version
 *  16 Data Offset (u64)       24 Time Stamp          28 Creator Application (4 chars)
 *  32 Creator Version         36 Creator Host OS     40 Original Size (u64)
 *  48 Current Size (u64)      56 Disk Geometry (C u16, H u8, S u8)
 *  60 Disk Type               64 Checksum            68 Unique Id (16)   84 Saved State (u8)
 */
export interface VhdFooter {
  cookie: string;
  features: number;
  fileFormatVersion: number;
  /** Absolute offset of the dynamic header; NO_OFFSET (all ones) on fixed disks. */
  dataOffset: bigint;
  timeStamp: number;
  creatorApplication: string;
  creatorVersion: number;
  creatorHostOs: string;
  originalSize: bigint;
  currentSize: bigint;
  geometry: Geometry;
  diskType: number;
  checksum: number;
  uniqueId: string;
  savedState: number;
}

export const FOOTER_CHECKSUM_OFFSET = 64;

export function decodeFooter(buf: Uint8Array): VhdFooter {
  const v = view(buf);
  return {
    cookie: asciiAt(buf, 0, 8),
    features: v.getUint32(8),
    fileFormatVersion: v.getUint32(12),
    dataOffset: v.getBigUint64(16),
    timeStamp: v.getUint32(24),
    creatorApplication: asciiAt(buf, 28, 4),
    creatorVersion: v.getUint32(32),
    creatorHostOs: asciiAt(buf, 36, 4),
    originalSize: v.getBigUint64(40),
    currentSize: v.getBigUint64(48),
    geometry: { cylinders: v.getUint16(56), heads: buf[58]!, sectorsPerTrack: buf[59]! },
    diskType: v.getUint32(60),
    checksum: v.getUint32(FOOTER_CHECKSUM_OFFSET),
    uniqueId: uniqueIdToString(buf, 68),
    savedState: buf[84]!,
  };
}

/** Encodes a footer, computing its checksum (the `checksum` field given is ignored). */
export function encodeFooter(f: Omit<VhdFooter, 'checksum' | 'cookie'>): Uint8Array {
  const buf = new Uint8Array(FOOTER_SIZE);
  const v = view(buf);
  writeAscii(buf, 0, FOOTER_COOKIE);
  v.setUint32(8, f.features);
  v.setUint32(12, f.fileFormatVersion);
  v.setBigUint64(16, f.dataOffset);
  v.setUint32(24, f.timeStamp >>> 0);
  writeAscii(buf, 28, f.creatorApplication.padEnd(4, ' ').slice(0, 4));
  v.setUint32(32, f.creatorVersion >>> 0);
  writeAscii(buf, 36, f.creatorHostOs.padEnd(4, ' ').slice(0, 4));
  v.setBigUint64(40, f.originalSize);
  v.setBigUint64(48, f.currentSize);
  v.setUint16(56, f.geometry.cylinders);
  buf[58] = f.geometry.heads;
  buf[59] = f.geometry.sectorsPerTrack;
  v.setUint32(60, f.diskType);
  buf.set(uniqueIdToBytes(f.uniqueId), 68);
  buf[84] = f.savedState;
  v.setUint32(FOOTER_CHECKSUM_OFFSET, vhdChecksum(buf, FOOTER_CHECKSUM_OFFSET));
  return buf;
}

/** True when the 512 (or, for old disks, 511 zero-padded) bytes carry the cookie and a good checksum. */
export function footerLooksValid(buf: Uint8Array): boolean {
  return hasFooterCookie(buf) && view(buf).getUint32(FOOTER_CHECKSUM_OFFSET) === vhdChecksum(buf, FOOTER_CHECKSUM_OFFSET);
}

export function hasFooterCookie(buf: Uint8Array): boolean {
  return buf.length >= 8 && asciiAt(buf, 0, 8) === FOOTER_COOKIE;
}

/** Seconds since the VHD epoch (2000-01-01 UTC) for a JS date. */
export function vhdTimeStamp(date: Date = new Date()): number {
  return Math.max(0, Math.floor((date.getTime() - VHD_EPOCH_MS) / 1000)) >>> 0;
}

export function timeStampToIso(ts: number): string {
  return new Date(VHD_EPOCH_MS + ts * 1000).toISOString();
}

/** Creator Version is major.minor in the high and low 16 bits. */
export function versionText(v: number): string {
  return `${v >>> 16}.${v & 0xffff}`;
}
