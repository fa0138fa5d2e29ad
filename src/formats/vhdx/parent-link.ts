import type { ByteSource } from '../../io/byte-source.js';
import { view } from '../../io/binary.js';
import { corrupt, DiskchainError } from '../../io/errors.js';
import { guidToBytes, guidToString, isGuidString, NULL_GUID } from '../../io/guid.js';
import type { ParentLinkUpdate } from '../types.js';
import { formatLinkage } from './describe.js';
import type { VhdxLayout } from './layout.js';
import { maxPagesPerEntry } from './log-writer.js';
import { PARENT_LOCATOR_GUID } from './metadata-items.js';
import { MAX_METADATA_ITEM_LENGTH, METADATA_TABLE_SIZE, type MetadataEntry } from './metadata-table.js';
import { PAGE_SIZE } from './page-cache.js';
import type { ParentLocator } from './parent-locator.js';
import { isWin32Absolute } from '../win32-path.js';

/** §2.6.2.6.1 KeyLength and ValueLength are 16-bit byte counts. */
const MAX_VALUE_BYTES = 0xfffe;

/** A GUID as we store and compare it: lowercase, no braces. Throws INVALID_ARGUMENT. */
export function normalizeGuid(text: string, what: string, file: string): string {
  if (typeof text !== 'string' || !isGuidString(text)) throw new DiskchainError('INVALID_ARGUMENT', `${what} "${String(text)}" is not a GUID`, { file });
  const guid = guidToString(guidToBytes(text));
  if (guid === NULL_GUID) throw new DiskchainError('INVALID_ARGUMENT', `${what} must not be the null GUID`, { file });
  return guid;
}

/**
 * §2.6.2.6.3 The locator a rewrite leaves: parent_linkage is the new parent's DataWriteGuid,
 * parent_linkage2 the alternate one (removed when none is given), relative_path and
 * absolute_win32_path the new paths (absolute_win32_path only when it is a Win32 path, removed otherwise). volume_path is removed: it names the old parent's volume and
 * the update carries no new one, and a stale path tried before absolute_win32_path could find the
 * wrong file. Every other key/value pair is kept, in its place.
 */
export function rewriteLocator(old: ParentLocator, link: ParentLinkUpdate, file: string): ParentLocator {
  if (link.identity.format !== 'vhdx') {
    throw new DiskchainError('UNSUPPORTED', `a VHDX differencing disk needs a VHDX parent, not ${String(link.identity.format).toUpperCase()}`, { file });
  }
  const set = new Map<string, string>([
    ['parent_linkage', formatLinkage(normalizeGuid(link.identity.dataWriteGuid, 'parent DataWriteGuid', file))],
    ['relative_path', pathValue(link.relativePath, 'relative path', file)],
  ]);
  const absolute = pathValue(link.absolutePath, 'absolute path', file);
  // A path Windows cannot follow is left out, and the old parent's is removed (win32-path.ts).
  if (isWin32Absolute(absolute)) set.set('absolute_win32_path', absolute);
  if (link.alternateDataWriteGuid !== undefined) {
    set.set('parent_linkage2', formatLinkage(normalizeGuid(link.alternateDataWriteGuid, 'alternate DataWriteGuid', file)));
  }
  const removed = new Set(['volume_path', 'parent_linkage2', 'absolute_win32_path']);
  const entries: [string, string][] = [];
  for (const [key, value] of old.entries) {
    if (set.has(key)) {
      entries.push([key, set.get(key)!]);
      set.delete(key);
    } else if (!removed.has(key)) entries.push([key, value]);
  }
  entries.push(...set);
  return { locatorType: old.locatorType, entries };
}

function pathValue(path: string, what: string, file: string): string {
  if (typeof path !== 'string' || path.length === 0) throw new DiskchainError('INVALID_ARGUMENT', `the parent's ${what} is empty`, { file });
  if (path.length * 2 > MAX_VALUE_BYTES) throw new DiskchainError('INVALID_ARGUMENT', `the parent's ${what} is ${path.length} characters; a locator value holds at most ${MAX_VALUE_BYTES / 2}`, { file });
  return path;
}

/**
 * §2.6.1.2 Where an item of `length` bytes can go: after the table, inside the region, overlapping no
 * other item. The item's current place (entry `self`) counts as free, since the move is atomic; it is
 * kept when the new item fits there, otherwise the first gap that holds it is taken.
 */
export function placeItem(entries: MetadataEntry[], self: number, length: number, regionLength: number): number | undefined {
  const taken = entries.flatMap((e, i) => (i !== self && e.length > 0 ? [[e.offset, e.offset + e.length] as const] : [])).sort((a, b) => a[0] - b[0]);
  const fits = (at: number): boolean => at >= METADATA_TABLE_SIZE && at + length <= regionLength && taken.every(([s, e]) => at + length <= s || at >= e);
  const current = entries[self]!;
  if (current.length > 0 && fits(current.offset)) return current.offset;
  const starts = [METADATA_TABLE_SIZE, ...taken.map(([, e]) => e)].sort((a, b) => a - b);
  return starts.find(fits);
}

export interface LocatorRewrite {
  /** 4 KiB pages of the metadata region ([file offset, new bytes]) to write through the log, in file order. */
  pages: [number, Uint8Array][];
  /** The metadata table entries afterwards. */
  entries: MetadataEntry[];
}

/**
 * The metadata region pages a new parent locator item changes: the item at its (maybe new) place, the
 * bytes of the old item no longer covered zeroed, and the table entry's Offset and Length (§2.6.1.2).
 * Reads only; refuses (NO_SPACE, UNSUPPORTED) before anything is written.
 */
export async function planLocatorRewrite(source: ByteSource, layout: VhdxLayout, item: Uint8Array, logLength: number): Promise<LocatorRewrite> {
  const file = source.name;
  const region = layout.metadata;
  const self = layout.metadataEntries.findIndex((e) => e.itemId === PARENT_LOCATOR_GUID && !e.isUser);
  if (self < 0) throw corrupt('the metadata table has no parent locator entry', file, region.fileOffset);
  if (item.length > MAX_METADATA_ITEM_LENGTH) {
    throw new DiskchainError('NO_SPACE', `the parent locator would be ${item.length} bytes; a metadata item holds at most ${MAX_METADATA_ITEM_LENGTH}`, { file, offset: region.fileOffset });
  }
  const offset = placeItem(layout.metadataEntries, self, item.length, region.length);
  if (offset === undefined) {
    throw new DiskchainError('NO_SPACE', `no free ${item.length} bytes for the parent locator in the ${region.length}-byte metadata region`, { file, offset: region.fileOffset });
  }
  const old = layout.metadataEntries[self]!;
  const pages = new Map<number, Uint8Array>();
  const put = async (at: number, bytes: Uint8Array): Promise<void> => {
    for (let done = 0; done < bytes.length; ) {
      const start = Math.floor((at + done) / PAGE_SIZE) * PAGE_SIZE;
      let page = pages.get(start);
      if (!page) {
        page = new Uint8Array(PAGE_SIZE);
        await source.read(page, region.fileOffset + start);
        pages.set(start, page);
      }
      const n = Math.min(bytes.length - done, start + PAGE_SIZE - (at + done));
      page.set(bytes.subarray(done, done + n), at + done - start);
      done += n;
    }
  };
  await put(old.offset, new Uint8Array(old.length));
  await put(offset, item);
  const fields = new Uint8Array(8);
  view(fields).setUint32(0, offset, true);
  view(fields).setUint32(4, item.length, true);
  await put(32 + self * 32 + 16, fields);
  // §2.3 One log entry makes the whole change atomic; it must fit in the log.
  if (pages.size > maxPagesPerEntry(logLength)) {
    throw new DiskchainError('UNSUPPORTED', `the parent locator change spans ${pages.size} pages, more than one entry of the ${logLength}-byte log holds`, { file, offset: region.fileOffset });
  }
  return {
    pages: [...pages].sort((a, b) => a[0] - b[0]).map(([at, page]) => [region.fileOffset + at, page]),
    entries: layout.metadataEntries.map((e, i) => (i === self ? { ...e, offset, length: item.length } : e)),
  };
}
