/**
 * Resize-VHD for VHDX (the arithmetic and the pages; VhdxDisk.resize runs it):
 *
 *   refuse   differencing (a child must match its parent's size) and fixed disks; a size that is not
 *            whole logical sectors or beyond 64 TiB; a shrink that would cut an allocated block
 *            (FULLY or PARTIALLY_PRESENT) — nothing beyond the new end may hold data
 *   prepare  BAT entries outside the new size set NOT_PRESENT (§2.5.1: a dynamic disk reads zeros
 *            either way, so the content does not change), through the log; when the BAT region is too
 *            small for the new size (§2.5: entries grow with the size), a larger BAT is written at the
 *            end of the file (1 MiB aligned, §2.2.3), which nothing references yet
 *   switch   one log entry (§2.3): the Virtual Disk Size item (§2.6.2.2) and, for a moved BAT, both
 *            region tables (§2.2.3, checksummed) naming it. A crash leaves the old size or the new one
 *
 * Grown space reads as zeros. The old BAT region of a moved BAT is left unused.
 */
import type { ByteSource } from '../../io/byte-source.js';
import { DiskchainError } from '../../io/errors.js';
import { BatLayout } from './bat.js';
import type { VhdxLayout } from './layout.js';
import { maxPagesPerEntry } from './log-writer.js';
import { encodeU64, MAX_VIRTUAL_SIZE, VIRTUAL_DISK_SIZE_GUID } from './metadata-items.js';
import { PAGE_SIZE } from './page-cache.js';
import { BAT_REGION_GUID, encodeRegionTable, REGION_TABLE_OFFSETS, REGION_TABLE_SIZE } from './region-table.js';

/** Refuses what Resize-VHD refuses for this file (nothing read but the layout). */
export function checkVhdxResize(layout: VhdxLayout, size: number, file: string): void {
  if (layout.fileParameters.hasParent) {
    throw new DiskchainError('UNSUPPORTED', 'a differencing disk cannot be resized (it must keep its parent\'s size): merge the chain into one disk first (diskchain merge), then resize', { file });
  }
  if (layout.fileParameters.leaveBlockAllocated) {
    throw new DiskchainError('UNSUPPORTED', 'resizing a fixed VHDX is not supported: convert it to a dynamic VHDX (diskchain convert) and resize that', { file });
  }
  const lss = layout.logicalSectorSize;
  if (!Number.isSafeInteger(size) || size <= 0 || size % lss !== 0 || size > MAX_VIRTUAL_SIZE) {
    throw new DiskchainError('INVALID_ARGUMENT', `the new size ${size} must be a multiple of the ${lss}-byte logical sector, from one sector to 64 TiB`, { file, size });
  }
}

/** The refusal of a shrink that would cut data: the smallest size that keeps every allocated block. */
export function shrinkRefusal(file: string, size: number, virtualSize: number, lastAllocatedEnd: number): DiskchainError {
  const minimum = Math.min(virtualSize, lastAllocatedEnd);
  return new DiskchainError(
    'INVALID_ARGUMENT',
    `cannot shrink to ${size} bytes: the disk holds allocated data up to ${minimum}; shrink the partition and file system inside it first (the smallest size now is ${minimum})`,
    { file, size, minimumSize: minimum },
  );
}

/** Reads the 4 KiB pages covering [at, at+bytes.length) into `pages` (once) and patches them. */
async function patch(source: ByteSource, pages: Map<number, Uint8Array>, at: number, bytes: Uint8Array): Promise<void> {
  for (let done = 0; done < bytes.length; ) {
    const start = Math.floor((at + done) / PAGE_SIZE) * PAGE_SIZE;
    let page = pages.get(start);
    if (!page) {
      page = new Uint8Array(PAGE_SIZE);
      await source.read(page, start);
      pages.set(start, page);
    }
    const n = Math.min(bytes.length - done, start + PAGE_SIZE - (at + done));
    page.set(bytes.subarray(done, done + n), at + done - start);
    done += n;
  }
}

/**
 * The pages of the switch: the Virtual Disk Size item, and with `movedBat` both region tables naming
 * it (only the pages that change). Refuses (UNSUPPORTED) when they do not fit one log entry.
 */
export async function planSwitch(source: ByteSource, layout: VhdxLayout, size: number, logLength: number, movedBat?: { fileOffset: number; length: number }): Promise<[number, Uint8Array][]> {
  const file = source.name;
  const item = layout.metadataEntries.find((e) => e.itemId === VIRTUAL_DISK_SIZE_GUID && !e.isUser);
  if (!item || item.length < 8) throw new DiskchainError('CORRUPT', 'the metadata table has no Virtual Disk Size item', { file, offset: layout.metadata.fileOffset });
  const pages = new Map<number, Uint8Array>();
  await patch(source, pages, layout.metadata.fileOffset + item.offset, encodeU64(size));
  if (movedBat) {
    const table = encodeRegionTable(layout.regions.map((r) => (r.guid === BAT_REGION_GUID ? { ...r, ...movedBat } : r)));
    for (const at of REGION_TABLE_OFFSETS) {
      const current = new Uint8Array(REGION_TABLE_SIZE);
      await source.read(current, at);
      for (let p = 0; p < REGION_TABLE_SIZE; p += PAGE_SIZE) {
        const next = table.subarray(p, p + PAGE_SIZE);
        if (Buffer.compare(current.subarray(p, p + PAGE_SIZE), next) !== 0) pages.set(at + p, new Uint8Array(next));
      }
    }
  }
  if (pages.size > maxPagesPerEntry(logLength)) {
    throw new DiskchainError('UNSUPPORTED', `the size change spans ${pages.size} pages, more than one entry of the ${logLength}-byte log holds`, { file });
  }
  return [...pages].sort((a, b) => a[0] - b[0]);
}

/** The BAT arithmetic at the new size (same block size, sector size, no parent). */
export function resizedBat(layout: VhdxLayout, size: number): BatLayout {
  return new BatLayout(size, layout.fileParameters.blockSize, layout.logicalSectorSize, false);
}
