import { settleReads, type ByteSource } from '../../io/byte-source.js';
import { alignUp } from '../../io/binary.js';
import { corrupt, DiskchainError } from '../../io/errors.js';
import { NULL_GUID, randomGuid } from '../../io/guid.js';
import { appendExtent, checkRange } from '../extents.js';
import type { Extent, ExtentState, LinkIdentity, ParentLinkUpdate, ParentReference, VirtualDisk } from '../types.js';
import {
  decodeBatEntry,
  encodeBatEntry,
  PAYLOAD_BLOCK_FULLY_PRESENT,
  PAYLOAD_BLOCK_NOT_PRESENT,
  PAYLOAD_BLOCK_PARTIALLY_PRESENT,
  PAYLOAD_BLOCK_ZERO,
  PAYLOAD_STATE_NAMES,
  SB_BLOCK_NOT_PRESENT,
  SB_BLOCK_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
  type BatEntry,
} from './bat.js';
import { HeaderWriter } from './header-writer.js';
import type { VhdxLayout } from './layout.js';
import { LogWriter } from './log-writer.js';
import { MIB } from './metadata-items.js';
import { PAGE_SIZE, PageCache } from './page-cache.js';
import { vhdxDetails, vhdxParentReference } from './describe.js';
import { planLocatorRewrite, rewriteLocator } from './parent-link.js';
import { encodeParentLocator } from './parent-locator.js';
import { runLength, setBits } from './sector-bitmap.js';
import { checkVhdxResize, planSwitch, resizedBat, shrinkRefusal } from './resize.js';
import { BAT_REGION_GUID } from './region-table.js';

/** A piece of the virtual disk as this layer stores it; data pieces say where in the file. */
export interface Segment extends Extent {
  fileOffset?: number;
}

/** Flush dirty metadata through the log once this many pages are waiting. */
const MAX_DIRTY_PAGES = 1024;

export interface VhdxSessionOptions {
  /** The DataWriteGuid the first data change of this session sets (normalized), instead of a random one. */
  dataWriteGuid?: string;
}

/** An opened VHDX file (one layer). */
export class VhdxDisk implements VirtualDisk {
  readonly format = 'vhdx' as const;
  private parentReference: ParentReference | undefined;
  private readonly cache: PageCache;
  private readonly headers: HeaderWriter;
  /** Where the next allocation goes (§2.1: 1 MiB aligned, appended). */
  private allocationCursor: number;
  /** The file's length: blocks must end inside it. */
  private fileEnd: number;
  private sessionStarted = false;
  private dataWriteGuidChanged = false;
  private dataDirty = false;
  private failure: unknown;
  private closed = false;

  constructor(
    private readonly source: ByteSource,
    readonly layout: VhdxLayout,
    fileSize: number,
    /** Facts about the open for `info` (log replayed, in memory or on disk). */
    readonly openNotes: Record<string, unknown> = {},
    private readonly session: VhdxSessionOptions = {},
  ) {
    this.cache = new PageCache(source);
    this.headers = new HeaderWriter(source, layout.current);
    this.allocationCursor = alignUp(fileSize, MIB);
    this.fileEnd = fileSize;
    this.parentReference = layout.parentLocator ? vhdxParentReference(layout.parentLocator, source.name) : undefined;
  }

  get parent(): ParentReference | undefined {
    return this.parentReference;
  }

  get path(): string {
    return this.source.name;
  }
  get readOnly(): boolean {
    return this.source.readOnly;
  }
  get diskType() {
    if (this.layout.fileParameters.hasParent) return 'differencing' as const;
    return this.layout.fileParameters.leaveBlockAllocated ? ('fixed' as const) : ('dynamic' as const);
  }
  get virtualSize(): number {
    return this.layout.virtualSize;
  }
  get logicalSectorSize(): number {
    return this.layout.logicalSectorSize;
  }
  get physicalSectorSize(): number {
    return this.layout.physicalSectorSize;
  }
  get blockSize(): number {
    return this.layout.fileParameters.blockSize;
  }
  get header() {
    return this.headers.header;
  }

  identity(): LinkIdentity {
    return { format: 'vhdx', dataWriteGuid: this.headers.header.dataWriteGuid };
  }

  details(): Record<string, unknown> {
    return { ...vhdxDetails(this.layout, this.headers.header), ...this.openNotes };
  }

  async fileSize(): Promise<number> {
    return this.source.size();
  }

  /** Payload and sector bitmap blocks in use, counted a 4 KiB BAT page at a time. */
  async allocatedBytes(): Promise<number> {
    const { batLayout, bat } = this.layout;
    const entries = batLayout.totalEntries;
    const lastPayloadIndex = batLayout.payloadIndex(batLayout.payloadBlocks - 1);
    let total = 0;
    for (let first = 0; first < entries; first += PAGE_SIZE / 8) {
      const page = await this.cache.get(bat.fileOffset + first * 8, bat.fileOffset + bat.length);
      for (let i = first; i < Math.min(entries, first + PAGE_SIZE / 8); i++) {
        const state = page[(i - first) * 8]! & 7; // §2.5: State is bits 0-2
        if (batLayout.isSectorBitmapIndex(i)) {
          if (state === SB_BLOCK_PRESENT) total += SECTOR_BITMAP_BLOCK_SIZE;
        } else if (i <= lastPayloadIndex && (state === PAYLOAD_BLOCK_FULLY_PRESENT || state === PAYLOAD_BLOCK_PARTIALLY_PRESENT)) {
          total += this.blockSize;
        }
      }
    }
    return total;
  }

  async map(offset: number, length: number): Promise<Extent[]> {
    const out: Extent[] = [];
    for (const { offset: o, length: l, state } of await this.segments(offset, length)) appendExtent(out, o, l, state);
    return out;
  }

  /** Reads the stored pieces of a range concurrently: one turn of the event loop queues every pread. */
  async read(target: Uint8Array, offset: number): Promise<void> {
    const reads: Promise<void>[] = [];
    for (const s of await this.segments(offset, target.length)) {
      const part = target.subarray(s.offset - offset, s.offset - offset + s.length);
      if (s.fileOffset !== undefined) reads.push(this.source.read(part, s.fileOffset));
      else part.fill(0);
    }
    await settleReads(reads);
  }

  /** The pieces of [offset, offset+length) as stored in this layer. */
  async segments(offset: number, length: number): Promise<Segment[]> {
    this.assertOpen();
    this.checkRange(offset, length);
    const out: Segment[] = [];
    const push = (s: Segment): void => {
      const last = out[out.length - 1];
      const contiguous = last && last.state === s.state && last.offset + last.length === s.offset;
      const fileContiguous = last?.fileOffset === undefined ? s.fileOffset === undefined : s.fileOffset === last.fileOffset + last.length;
      if (contiguous && fileContiguous) last.length += s.length;
      else if (s.length > 0) out.push(s);
    };
    const bs = this.blockSize;
    const end = offset + length;
    for (let pos = offset; pos < end; ) {
      const block = Math.floor(pos / bs);
      const blockStart = block * bs;
      const pieceEnd = Math.min(end, blockStart + bs);
      const entry = await this.payloadEntry(block);
      if (entry.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
        await this.partialSegments(block, entry, pos, pieceEnd, push);
      } else {
        const state = this.stateOf(entry.state);
        push({ offset: pos, length: pieceEnd - pos, state, ...(state === 'data' ? { fileOffset: entry.fileOffset + (pos - blockStart) } : {}) });
      }
      pos = pieceEnd;
    }
    return out;
  }

  /** §2.5.1 What a whole-block state means for reads in this file. */
  private stateOf(state: number): ExtentState {
    switch (state) {
      case PAYLOAD_BLOCK_FULLY_PRESENT:
        return 'data';
      case PAYLOAD_BLOCK_NOT_PRESENT:
        return 'transparent';
      default:
        // ZERO always reads zeros; UNDEFINED and UNMAPPED never fall through to a parent.
        return 'zero';
    }
  }

  private async partialSegments(block: number, entry: BatEntry, from: number, to: number, push: (s: Segment) => void): Promise<void> {
    const lss = this.logicalSectorSize;
    const blockStart = block * this.blockSize;
    const sbOffset = await this.presentBitmapOffset(block);
    const byteBase = this.layout.batLayout.bitmapByteOffset(block);
    let sector = Math.floor((from - blockStart) / lss);
    const lastSector = Math.ceil((to - blockStart) / lss);
    while (sector < lastSector) {
      // Work one 4 KiB bitmap page (32768 sectors) at a time.
      const bitInChunk = byteBase * 8 + sector;
      const pageStart = Math.floor(bitInChunk / (PAGE_SIZE * 8)) * PAGE_SIZE;
      const page = await this.cache.get(sbOffset + pageStart, sbOffset + SECTOR_BITMAP_BLOCK_SIZE);
      const bitInPage = bitInChunk - pageStart * 8;
      const n = runLength(page, bitInPage, Math.min(lastSector - sector, PAGE_SIZE * 8 - bitInPage));
      const present = ((page[bitInPage >>> 3]! >>> (bitInPage & 7)) & 1) === 1;
      const s = Math.max(from, blockStart + sector * lss);
      const e = Math.min(to, blockStart + (sector + n) * lss);
      push({ offset: s, length: e - s, state: present ? 'data' : 'transparent', ...(present ? { fileOffset: entry.fileOffset + (s - blockStart) } : {}) });
      sector += n;
    }
  }

  async write(data: Uint8Array, offset: number): Promise<void> {
    this.assertUsable();
    if (this.readOnly) throw new DiskchainError('READ_ONLY', 'disk is open read-only', { file: this.path });
    this.checkRange(offset, data.length);
    const lss = this.logicalSectorSize;
    if (offset % lss !== 0 || data.length % lss !== 0) {
      throw new DiskchainError('INVALID_ARGUMENT', `writes must be whole ${lss}-byte sectors`, { file: this.path, offset });
    }
    if (data.length === 0) return;
    await this.beginModification(true);
    try {
      const bs = this.blockSize;
      for (let pos = offset; pos < offset + data.length; ) {
        const block = Math.floor(pos / bs);
        const blockStart = block * bs;
        const pieceEnd = Math.min(offset + data.length, blockStart + bs);
        await this.writeInBlock(block, pos - blockStart, data.subarray(pos - offset, pieceEnd - offset));
        pos = pieceEnd;
      }
    } catch (e) {
      // Each block's data lands before its BAT entry changes, so a full file system (the data write or
      // the file's extension failing) leaves the mapping as it was: the write may be retried once there
      // is room (QEMU pauses the VM on ENOSPC and retries on resume). Anything else poisons the disk.
      this.dataDirty = true;
      if (!(e instanceof DiskchainError && e.code === 'NO_SPACE')) this.failure ??= e;
      throw e;
    }
    this.dataDirty = true;
    try {
      if (this.cache.dirtyCount >= MAX_DIRTY_PAGES) await this.commitMetadata();
    } catch (e) {
      this.failOrRetry(e);
      throw e;
    }
  }

  /** §2.5.1.1 Blocks this file does not hold (NOT_PRESENT, UNDEFINED, UNMAPPED) become PAYLOAD_BLOCK_ZERO. */
  async zeroBlocks(offset: number, length: number): Promise<boolean> {
    this.assertUsable();
    if (this.readOnly) throw new DiskchainError('READ_ONLY', 'disk is open read-only', { file: this.path });
    this.checkRange(offset, length);
    const bs = this.blockSize;
    if (offset % bs !== 0 || (length % bs !== 0 && offset + length !== this.virtualSize)) {
      throw new DiskchainError('INVALID_ARGUMENT', `zeroBlocks takes whole ${bs}-byte blocks`, { file: this.path, offset });
    }
    // A fixed VHDX keeps every block allocated (File Parameters LeaveBlockAllocated, §2.6.2.1).
    if (this.layout.fileParameters.leaveBlockAllocated) return false;
    const first = offset / bs;
    const end = Math.ceil((offset + length) / bs);
    try {
      for (let block = first; block < end; block++) {
        const { state } = await this.payloadEntry(block);
        if (state === PAYLOAD_BLOCK_ZERO || state === PAYLOAD_BLOCK_FULLY_PRESENT || state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) continue;
        await this.beginModification(true);
        await this.setPayloadEntry(block, { state: PAYLOAD_BLOCK_ZERO, fileOffset: 0 });
        this.dataDirty = true;
      }
      if (this.cache.dirtyCount >= MAX_DIRTY_PAGES) await this.commitMetadata();
    } catch (e) {
      this.failure ??= e;
      throw e;
    }
    return true;
  }

  private async writeInBlock(block: number, inBlock: number, piece: Uint8Array): Promise<void> {
    const entry = await this.payloadEntry(block);
    if (entry.state === PAYLOAD_BLOCK_FULLY_PRESENT) {
      await this.source.write(piece, entry.fileOffset + inBlock);
      return;
    }
    if (entry.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
      await this.source.write(piece, entry.fileOffset + inBlock);
      await this.markSectorsPresent(block, inBlock, piece.length);
      return;
    }
    // Not allocated: take a fresh block at the end of the file (it reads as zeros).
    const fileOffset = await this.allocate(this.blockSize);
    await this.source.write(piece, fileOffset + inBlock);
    const wholeBlock = inBlock === 0 && piece.length >= Math.min(this.blockSize, this.virtualSize - block * this.blockSize);
    if (this.layout.fileParameters.hasParent && entry.state === PAYLOAD_BLOCK_NOT_PRESENT && !wholeBlock) {
      // The rest of the block still belongs to the parent: the sector bitmap says which sectors are ours.
      await this.ensureBitmapBlock(Math.floor(block / this.layout.batLayout.chunkRatio));
      await this.markSectorsPresent(block, inBlock, piece.length);
      await this.setPayloadEntry(block, { state: PAYLOAD_BLOCK_PARTIALLY_PRESENT, fileOffset });
    } else {
      await this.setPayloadEntry(block, { state: PAYLOAD_BLOCK_FULLY_PRESENT, fileOffset });
    }
  }

  private async markSectorsPresent(block: number, inBlock: number, length: number): Promise<void> {
    const lss = this.logicalSectorSize;
    const sbOffset = await this.presentBitmapOffset(block);
    let bit = this.layout.batLayout.bitmapByteOffset(block) * 8 + inBlock / lss;
    let count = length / lss;
    while (count > 0) {
      const pageStart = Math.floor(bit / (PAGE_SIZE * 8)) * PAGE_SIZE;
      const page = await this.cache.get(sbOffset + pageStart, sbOffset + SECTOR_BITMAP_BLOCK_SIZE);
      const first = bit - pageStart * 8;
      const n = Math.min(count, PAGE_SIZE * 8 - first);
      setBits(page, first, n);
      this.cache.markDirty(sbOffset + pageStart, page);
      bit += n;
      count -= n;
    }
  }

  private async ensureBitmapBlock(chunk: number): Promise<void> {
    if ((await this.bitmapEntry(chunk)).state === SB_BLOCK_PRESENT) return;
    const fileOffset = await this.allocate(SECTOR_BITMAP_BLOCK_SIZE);
    await this.setBitmapEntry(chunk, { state: SB_BLOCK_PRESENT, fileOffset });
  }

  private async allocate(bytes: number): Promise<number> {
    const at = this.allocationCursor;
    const end = at + alignUp(bytes, MIB);
    await this.source.truncate(end);
    this.allocationCursor = this.fileEnd = end;
    return at;
  }

  /**
   * §2.2.2.1 The first header update of a session sets a new FileWriteGuid. DataWriteGuid changes only
   * before the first change to what the virtual disk shows (`data`): to the GUID the open asked for,
   * else a random one.
   */
  private async beginModification(data: boolean): Promise<void> {
    if (this.sessionStarted && (this.dataWriteGuidChanged || !data)) return;
    await this.headers.update({
      ...(this.sessionStarted ? {} : { fileWriteGuid: randomGuid() }),
      ...(data ? { dataWriteGuid: this.session.dataWriteGuid ?? randomGuid() } : {}),
    });
    this.sessionStarted = true;
    if (data) this.dataWriteGuidChanged = true;
  }

  /**
   * Differencing disks: rewrites the parent locator (§2.6.2.6) through the log in one entry (§2.3), so a
   * crash leaves the old or the new locator whole. The item stays in place when it fits, else moves to
   * free space in the metadata region with its table entry in the same entry. Pending BAT changes are
   * committed first. DataWriteGuid is kept (§2.2.2.1: only a change to the disk's contents or
   * user-visible metadata such as its size changes it), so this disk's own children stay linked.
   */
  async setParent(link: ParentLinkUpdate): Promise<void> {
    this.assertUsable();
    if (this.readOnly) throw new DiskchainError('READ_ONLY', 'disk is open read-only', { file: this.path });
    if (!this.layout.fileParameters.hasParent || !this.layout.parentLocator) {
      throw new DiskchainError('UNSUPPORTED', `a ${this.diskType} disk has no parent to rewrite`, { file: this.path });
    }
    const locator = rewriteLocator(this.layout.parentLocator, link, this.path);
    const item = encodeParentLocator(locator);
    await this.flush();
    const plan = await planLocatorRewrite(this.source, this.layout, item, this.headers.header.logLength);
    try {
      await this.beginModification(false);
      await this.commitThroughLog(plan.pages);
    } catch (e) {
      this.failure ??= e;
      throw e;
    }
    this.layout.metadataEntries = plan.entries;
    this.layout.parentLocator = locator;
    this.parentReference = vhdxParentReference(locator, this.path);
  }

  /**
   * Resize-VHD (resize.ts has the steps): grows, or shrinks when no allocated block lies beyond the
   * new end. Crash-safe: the size (and a moved BAT's region entry) changes in one log entry (§2.3).
   * DataWriteGuid changes (§2.2.2.1: the size is user-visible metadata).
   */
  async resize(size: number): Promise<void> {
    this.assertUsable();
    if (this.readOnly) throw new DiskchainError('READ_ONLY', 'disk is open read-only', { file: this.path });
    checkVhdxResize(this.layout, size, this.path);
    if (size === this.virtualSize) return;
    const old = this.layout.batLayout;
    const next = resizedBat(this.layout, size);
    const bs = this.blockSize;
    if (size < this.virtualSize) {
      // Nothing allocated may lie beyond the new end, not even in the block that straddles it.
      for (let b = old.payloadBlocks - 1; b >= Math.floor(size / bs); b--) {
        const { state } = await this.payloadEntry(b);
        if (state !== PAYLOAD_BLOCK_FULLY_PRESENT && state !== PAYLOAD_BLOCK_PARTIALLY_PRESENT) continue;
        throw shrinkRefusal(this.path, size, this.virtualSize, (b + 1) * bs);
      }
    }
    await this.flush();
    try {
      await this.beginModification(true);
      // Entries between the two sizes read NOT_PRESENT (zeros, as before: no content changes); a moved
      // BAT starts from the kept entries and zeros.
      const keep = Math.min(old.totalEntries, next.totalEntries);
      const moved = next.totalEntries * 8 > this.layout.bat.length;
      for (let i = keep; i < (moved ? keep : Math.max(old.totalEntries, next.totalEntries)); i++) {
        if ((await this.batEntryAt(i)).state !== PAYLOAD_BLOCK_NOT_PRESENT) await this.setBatEntry(i, { state: PAYLOAD_BLOCK_NOT_PRESENT, fileOffset: 0 });
      }
      // Growing past a last block cut by the old end: its bytes beyond that end must read zeros.
      const cut = this.virtualSize % bs;
      if (size > this.virtualSize && cut !== 0) {
        const entry = await this.payloadEntry(old.payloadBlocks - 1);
        if (entry.state === PAYLOAD_BLOCK_FULLY_PRESENT) {
          const tail = Math.min(bs, size - (old.payloadBlocks - 1) * bs) - cut;
          const blockEnd = entry.fileOffset + cut + tail;
          if (blockEnd > this.fileEnd) {
            // The file may end where the old disk did: extend it, and allocate after the block.
            const end = alignUp(blockEnd, MIB);
            await this.source.truncate(end);
            this.allocationCursor = this.fileEnd = end;
          }
          await this.source.write(new Uint8Array(tail), entry.fileOffset + cut);
        }
      }
      await this.commitMetadata();
      let movedBat: { fileOffset: number; length: number } | undefined;
      if (moved) {
        const length = next.regionLength();
        const fileOffset = await this.allocate(length);
        const bat = this.layout.bat;
        for (let first = 0; first < keep * 8; first += PAGE_SIZE) {
          const page = new Uint8Array(await this.cache.get(bat.fileOffset + first, bat.fileOffset + bat.length));
          if (first + PAGE_SIZE > keep * 8) page.fill(0, keep * 8 - first);
          await this.source.write(page, fileOffset + first);
        }
        await this.source.flush();
        movedBat = { fileOffset, length };
      }
      await this.commitThroughLog(await planSwitch(this.source, this.layout, size, this.headers.header.logLength, movedBat));
      if (movedBat) {
        this.layout.regions = this.layout.regions.map((r) => (r.guid === BAT_REGION_GUID ? { ...r, ...movedBat } : r));
        this.layout.bat = { ...this.layout.bat, ...movedBat };
      }
      this.layout.virtualSize = size;
      this.layout.batLayout = next;
    } catch (e) {
      this.failure ??= e;
      throw e;
    }
  }

  /** Writes every dirty BAT and sector bitmap page through the log (§2.3). */
  private async commitMetadata(): Promise<void> {
    if (this.cache.dirtyCount === 0) return;
    const pages = this.cache.dirtyPages();
    await this.commitThroughLog(pages);
    this.cache.markCommitted(pages.map(([at]) => at));
  }

  /**
   * §2.3 Payload data flushed; a fresh LogGuid in both headers; each entry written and flushed, then its
   * pages written in place and flushed; LogGuid cleared. FlushedFileOffset is the durable file size
   * (whole MiB), LastFileOffset the allocation end.
   */
  private async commitThroughLog(pages: [number, Uint8Array][]): Promise<void> {
    await this.source.flush();
    const flushed = Math.floor((await this.source.size()) / MIB) * MIB;
    const logGuid = randomGuid();
    await this.headers.update({ logGuid });
    const { logOffset, logLength } = this.headers.header;
    const log = new LogWriter(this.source, logOffset, logLength, logGuid, 1n);
    await log.commit(pages, flushed, Math.max(this.allocationCursor, flushed));
    await this.headers.update({ logGuid: NULL_GUID });
  }

  async flush(): Promise<void> {
    this.assertUsable();
    if (this.readOnly) return;
    try {
      if (this.cache.dirtyCount > 0) await this.commitMetadata();
      else if (this.dataDirty) await this.source.flush();
      this.dataDirty = false;
    } catch (e) {
      this.failOrRetry(e);
      throw e;
    }
  }

  /**
   * After a failed metadata commit: a write the file system refused for space (nothing written) can
   * be retried once there is room, since the pages stay dirty in the cache and the next commit goes
   * through a fresh log (§2.3); QEMU pauses the guest on ENOSPC and retries on resume. A failed
   * flush (the kernel may have dropped the pages it could not write back) or any other error
   * poisons the disk.
   */
  private failOrRetry(e: unknown): void {
    const refusedWrite = e instanceof DiskchainError && e.code === 'NO_SPACE' && typeof e.details.offset === 'number';
    if (!refusedWrite) this.failure ??= e;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.readOnly && this.failure === undefined) await this.flush();
    } finally {
      this.closed = true;
      await this.source.close();
    }
  }

  // --- BAT access (§2.5) ---

  async payloadEntry(block: number): Promise<BatEntry> {
    const index = this.layout.batLayout.payloadIndex(block);
    const entry = await this.batEntryAt(index);
    const at = this.layout.bat.fileOffset + index * 8;
    if (!(entry.state in PAYLOAD_STATE_NAMES)) throw corrupt(`BAT entry for block ${block} has reserved state ${entry.state}`, this.path, at);
    if (entry.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT && !this.layout.fileParameters.hasParent) {
      throw corrupt(`block ${block} is PARTIALLY_PRESENT in a disk without a parent`, this.path, at);
    }
    if (entry.state === PAYLOAD_BLOCK_FULLY_PRESENT || entry.state === PAYLOAD_BLOCK_PARTIALLY_PRESENT) {
      // The last block may be cut where the virtual disk ends.
      const used = Math.min(this.blockSize, this.virtualSize - block * this.blockSize);
      this.checkBlockPlacement(entry.fileOffset, used, `block ${block}`, at);
    }
    return entry;
  }

  private async bitmapEntry(chunk: number): Promise<BatEntry> {
    const index = this.layout.batLayout.sectorBitmapIndex(chunk);
    const at = this.layout.bat.fileOffset + index * 8;
    if ((index + 1) * 8 > this.layout.bat.length) throw corrupt(`BAT region too small for the sector bitmap entry of chunk ${chunk}`, this.path, at);
    const entry = await this.batEntryAt(index);
    if (entry.state !== SB_BLOCK_NOT_PRESENT && entry.state !== SB_BLOCK_PRESENT) {
      throw corrupt(`sector bitmap entry of chunk ${chunk} has invalid state ${entry.state}`, this.path, at);
    }
    if (entry.state === SB_BLOCK_PRESENT) this.checkBlockPlacement(entry.fileOffset, SECTOR_BITMAP_BLOCK_SIZE, `sector bitmap of chunk ${chunk}`, at);
    return entry;
  }

  /** File offset of the sector bitmap block covering `block`, which must be present. */
  private async presentBitmapOffset(block: number): Promise<number> {
    const chunk = Math.floor(block / this.layout.batLayout.chunkRatio);
    const sb = await this.bitmapEntry(chunk);
    if (sb.state !== SB_BLOCK_PRESENT) {
      const at = this.layout.bat.fileOffset + this.layout.batLayout.payloadIndex(block) * 8;
      throw corrupt(`block ${block} is PARTIALLY_PRESENT but its chunk has no sector bitmap`, this.path, at);
    }
    return sb.fileOffset;
  }

  private async batEntryAt(index: number): Promise<BatEntry> {
    const at = this.layout.bat.fileOffset + index * 8;
    const pageStart = at - (at % PAGE_SIZE);
    const page = await this.cache.get(pageStart, this.layout.bat.fileOffset + this.layout.bat.length);
    return decodeBatEntry(page, at - pageStart);
  }

  private async setBatEntry(index: number, entry: BatEntry): Promise<void> {
    const at = this.layout.bat.fileOffset + index * 8;
    const pageStart = at - (at % PAGE_SIZE);
    const page = await this.cache.get(pageStart, this.layout.bat.fileOffset + this.layout.bat.length);
    encodeBatEntry(page, at - pageStart, entry);
    this.cache.markDirty(pageStart, page);
  }

  private setPayloadEntry(block: number, entry: BatEntry): Promise<void> {
    return this.setBatEntry(this.layout.batLayout.payloadIndex(block), entry);
  }

  private setBitmapEntry(chunk: number, entry: BatEntry): Promise<void> {
    return this.setBatEntry(this.layout.batLayout.sectorBitmapIndex(chunk), entry);
  }

  /** A block must lie after the header section, inside the file, and clear of the log and regions. */
  private checkBlockPlacement(fileOffset: number, length: number, what: string, at: number): void {
    if (fileOffset < MIB || fileOffset + length > this.fileEnd) {
      throw corrupt(`${what} at file offset ${fileOffset} lies outside the file's data area (file ends at ${this.fileEnd})`, this.path, at);
    }
    const { logOffset, logLength } = this.headers.header;
    const spans: [number, number][] = [[logOffset, logOffset + logLength], ...this.layout.regions.map((r): [number, number] => [r.fileOffset, r.fileOffset + r.length])];
    for (const [s, e] of spans) {
      if (fileOffset < e && fileOffset + length > s) throw corrupt(`${what} at file offset ${fileOffset} overlaps the log or a region`, this.path, at);
    }
  }

  private checkRange(offset: number, length: number): void {
    checkRange(this.path, this.virtualSize, offset, length);
  }

  private assertOpen(): void {
    if (this.closed) throw new DiskchainError('INVALID_ARGUMENT', 'disk is closed', { file: this.path });
  }

  private assertUsable(): void {
    this.assertOpen();
    if (this.failure !== undefined) {
      throw new DiskchainError('IO', 'an earlier write failed; reopen the disk (the log makes it consistent)', { file: this.path }, { cause: this.failure });
    }
  }
}

