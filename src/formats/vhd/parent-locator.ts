import { posix } from 'node:path';
import { alignUp, asciiAt, utf16leAt, view, writeAscii } from '../../io/binary.js';
import type { ParentLocatorEntry } from '../types.js';
import { SECTOR } from './constants.js';
import { isWin32Absolute } from '../win32-path.js';

/**
 * Parent Locator Entries (spec: "Dynamic Disk Header Format", Parent Locator Entries): eight
 * 24-byte big-endian records in the dynamic header naming where a differencing disk's parent is.
 *
 *   0 Platform Code (4 chars)   4 Platform Data Space   8 Platform Data Length
 *  12 Reserved                 16 Platform Data Offset (u64, absolute file offset)
 */
export interface LocatorEntry {
  platformCode: string;
  platformDataSpace: number;
  platformDataLength: number;
  platformDataOffset: bigint;
}

export const LOCATOR_ENTRY_COUNT = 8;
export const LOCATOR_ENTRY_SIZE = 24;

/** Platform codes (spec: Platform Code). Code 0 means the entry is unused. */
export const PLATFORM_NONE = '\u0000\u0000\u0000\u0000';
/** Windows relative / absolute paths, UTF-16LE: the ones Windows reads and writes. */
export const PLATFORM_W2RU = 'W2ru';
export const PLATFORM_W2KU = 'W2ku';
/** Deprecated Windows codes (ANSI paths): recognised, reported, not followed. */
export const PLATFORM_WI2R = 'Wi2r';
export const PLATFORM_WI2K = 'Wi2k';
/** Mac OS alias blob and Mac OS X file URL: recognised and ignored. */
export const PLATFORM_MAC = 'Mac ';
export const PLATFORM_MACX = 'MacX';

const KNOWN = new Set([PLATFORM_W2RU, PLATFORM_W2KU, PLATFORM_WI2R, PLATFORM_WI2K, PLATFORM_MAC, PLATFORM_MACX]);

export function isKnownPlatform(code: string): boolean {
  return KNOWN.has(code);
}

export function isUnusedEntry(e: LocatorEntry): boolean {
  return e.platformCode === PLATFORM_NONE;
}

export function decodeLocatorEntry(buf: Uint8Array): LocatorEntry {
  const v = view(buf);
  return {
    platformCode: asciiAt(buf, 0, 4),
    platformDataSpace: v.getUint32(4),
    platformDataLength: v.getUint32(8),
    platformDataOffset: v.getBigUint64(16),
  };
}

export function encodeLocatorEntry(e: LocatorEntry): Uint8Array {
  const buf = new Uint8Array(LOCATOR_ENTRY_SIZE);
  const v = view(buf);
  writeAscii(buf, 0, e.platformCode);
  v.setUint32(4, e.platformDataSpace >>> 0);
  v.setUint32(8, e.platformDataLength >>> 0);
  v.setBigUint64(16, e.platformDataOffset);
  return buf;
}

/**
 * Bytes reserved for an entry's data. The spec says Platform Data Space counts sectors, but
 * Windows writes a byte count (e.g. 0x1000 for a 84-byte path). A value that is a whole number of
 * sectors and at least the data length is taken as bytes; anything else as sectors.
 */
export function locatorSpaceBytes(e: LocatorEntry): number {
  const s = e.platformDataSpace;
  if (s % SECTOR === 0 && s >= e.platformDataLength) return s;
  return s * SECTOR;
}

/** The path a W2ru/W2ku entry holds (UTF-16LE, spec: Platform Code table). */
/** The Platform Data Space a locator of `dataLength` bytes gets: whole sectors, at least one. */
export function locatorSpaceFor(dataLength: number): number {
  return Math.max(SECTOR, alignUp(dataLength, SECTOR));
}

export function decodeLocatorPath(data: Uint8Array): string {
  return utf16leAt(data, 0, data.length - (data.length % 2));
}

export function encodeLocatorPath(path: string): Uint8Array {
  return new Uint8Array(Buffer.from(path, 'utf16le'));
}

/** Maps a W2ru/W2ku entry to the interface's locator kinds; other codes give undefined. */
export function toParentLocator(code: string, path: string): ParentLocatorEntry | undefined {
  if (code === PLATFORM_W2RU) return { kind: 'relative', key: code, path };
  if (code === PLATFORM_W2KU) return { kind: path.startsWith('\\\\?\\Volume{') ? 'volume' : 'absolute', key: code, path };
  return undefined;
}

/**
 * The locators a link writes, in Windows' order: W2ku (absolute) only when the path is one Windows
 * can follow (../win32-path.ts), then W2ru (relative, always). The spec makes every locator optional.
 */
export function linkLocatorPaths(link: { absolutePath: string; relativePath: string }): Array<[string, string]> {
  return [...(isWin32Absolute(link.absolutePath) ? [[PLATFORM_W2KU, link.absolutePath] as [string, string]] : []), [PLATFORM_W2RU, link.relativePath]];
}

/**
 * Parent Unicode Name (spec: the parent's file name): the absolute path where it is a Win32 one, as
 * Windows writes it; otherwise only the file name, so no POSIX path reaches a Windows reader.
 */
export function parentUnicodeName(absolutePath: string): string {
  return isWin32Absolute(absolutePath) ? absolutePath : posix.basename(absolutePath);
}
