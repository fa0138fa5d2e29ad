import { alignUp } from '../../io/binary.js';
import { DiskchainError } from '../../io/errors.js';
import type { ParentLinkUpdate } from '../types.js';
import { UNALLOCATED } from './bat.js';
import { DYNAMIC_HEADER_SIZE, FOOTER_SIZE, SECTOR } from './constants.js';
import { withParentFields } from './dynamic-header.js';
import type { VhdLayout } from './layout.js';
import { encodeLocatorPath, isUnusedEntry, linkLocatorPaths, locatorSpaceFor, parentUnicodeName, type LocatorEntry } from './parent-locator.js';
import { isUniqueIdString, uniqueIdToBytes, uniqueIdToString } from './unique-id.js';

/** The longest path we write: Windows' limit of 32,767 UTF-16 units. */
const MAX_PATH_UNITS = 32767;

/** What setParent writes, in order (see VhdDisk.setParent). */
export interface VhdLinkPlan {
  /** When the locator data goes past the end: where the footer moves first. */
  footerAt?: number;
  /** The new locator data, padded to whole sectors, each in space nothing references yet. */
  data: Array<[number, Uint8Array]>;
  /** The new dynamic header (1024 bytes). */
  header: Uint8Array;
}

/**
 * Spec §Dynamic Disk Header Format, §Implementing a Differencing Hard Disk: the new parent fields and
 * W2ku/W2ru locators (absolute, then relative, as Windows orders them) with their data placed in free
 * space: a gap that nothing the current header, BAT or blocks reference, else past the end footer.
 * Entries of other platforms (Wi2k, Wi2r, Mac) name the old parent's place, so they are dropped.
 * Validates `link`; throws before the caller writes anything.
 */
export function planParentLink(layout: VhdLayout, header: Uint8Array, link: ParentLinkUpdate): VhdLinkPlan {
  const file = layout.file;
  const bad = (message: string): DiskchainError => new DiskchainError('INVALID_ARGUMENT', message, { file });
  const identity = link.identity;
  if (identity.format !== 'vhd') throw new DiskchainError('UNSUPPORTED', `a VHD differencing disk needs a VHD parent, not ${String(identity.format).toUpperCase()}`, { file });
  if (typeof identity.uniqueId !== 'string' || !isUniqueIdString(identity.uniqueId)) throw bad(`parent unique id ${String(identity.uniqueId)} is not a UUID`);
  if (!Number.isInteger(identity.timestamp) || identity.timestamp < 0 || identity.timestamp > 0xffffffff) throw bad(`parent time stamp ${identity.timestamp} is not a 32-bit count of seconds`);
  for (const [what, path] of [['absolute', link.absolutePath], ['relative', link.relativePath]]) {
    if (typeof path !== 'string' || path.length === 0) throw bad(`the ${what} parent path is empty`);
  }
  const paths = linkLocatorPaths(link);
  for (const [code, path] of paths) {
    if (typeof path !== 'string' || path.length === 0) throw bad(`the ${code} parent path is empty`);
    if (path.length > MAX_PATH_UNITS) throw bad(`the ${code} parent path is ${path.length} characters, more than ${MAX_PATH_UNITS}`);
  }

  const taken = referencedSpans(layout);
  let end = layout.footerOffset;
  const data: Array<[number, Uint8Array]> = [];
  const locators: LocatorEntry[] = [];
  for (const [code, path] of paths) {
    const bytes = encodeLocatorPath(path);
    const space = locatorSpaceFor(bytes.length);
    let at = findGap(taken, space, layout.footerOffset);
    if (at === undefined) {
      at = end;
      end += space;
    }
    taken.push([at, at + space]);
    const padded = new Uint8Array(space);
    padded.set(bytes);
    data.push([at, padded]);
    // Platform Data Space as a byte count, as Windows writes it (see locatorSpaceBytes).
    locators.push({ platformCode: code, platformDataSpace: space, platformDataLength: bytes.length, platformDataOffset: BigInt(at) });
  }
  const newHeader = withParentFields(header, {
    parentUniqueId: uniqueIdToString(uniqueIdToBytes(identity.uniqueId)),
    parentTimeStamp: identity.timestamp,
    parentUnicodeName: parentUnicodeName(link.absolutePath),
    parentLocators: locators,
  });
  return { ...(end !== layout.footerOffset ? { footerAt: end } : {}), data, header: newHeader };
}

/**
 * Byte ranges the file references now: the footer copy, the dynamic header, the BAT (all Max Table
 * Entries of it, up to the footer), the current locator data, the blocks, and the footer onwards.
 */
function referencedSpans(layout: VhdLayout): Array<[number, number]> {
  const { headerOffset, tableOffset, footerOffset } = layout;
  const tableEntries = Math.max(layout.blockCount, Math.min(layout.header?.maxTableEntries ?? 0, Math.ceil(footerOffset / 4)));
  const spans: Array<[number, number]> = [
    [0, FOOTER_SIZE],
    [headerOffset, headerOffset + DYNAMIC_HEADER_SIZE],
    [tableOffset, tableOffset + alignUp(tableEntries * 4, SECTOR)],
    [footerOffset, Infinity],
  ];
  for (const l of layout.locators) {
    if (isUnusedEntry(l.entry)) continue;
    const start = Number(l.entry.platformDataOffset);
    spans.push([start, start + l.entry.platformDataLength]);
  }
  const blockSpan = layout.bitmapSize + layout.blockSize;
  for (const e of layout.bat) if (e !== UNALLOCATED) spans.push([e * SECTOR, e * SECTOR + blockSpan]);
  return spans;
}

/** The lowest sector-aligned start of `length` free bytes before `limit`, if any. */
function findGap(spans: Array<[number, number]>, length: number, limit: number): number | undefined {
  const sorted = [...spans].sort((a, b) => a[0] - b[0]);
  let cursor = FOOTER_SIZE;
  for (const [start, stop] of sorted) {
    const at = alignUp(cursor, SECTOR);
    if (at + length <= Math.min(start, limit)) return at;
    cursor = Math.max(cursor, stop);
    if (cursor >= limit) return undefined;
  }
  return undefined;
}
