import { settleReads, writeParts, type ByteSource } from '../../io/byte-source.js';
import { DiskchainError } from '../../io/errors.js';
import type { DiskType, Extent, ExtentState, LinkIdentity, ParentLinkUpdate, ParentReference, VirtualDisk } from '../types.js';
import { appendExtent, checkRange } from '../extents.js';
import { batByteLength, encodeBatRange, UNALLOCATED } from './bat.js';
import { DEFAULT_BLOCK_SIZE, DYNAMIC_HEADER_SIZE, SECTOR } from './constants.js';
import { vhdDetails } from './details.js';
import { parseVhd, type VhdLayout } from './layout.js';
import { planParentLink } from './parent-link.js';
import { checkVhdResize, headerWithTable, resizedFooter } from './resize.js';
import { allBitsSet, bitRuns, setBits } from './sector-bitmap.js';

const BITMAP_CACHE_LIMIT = 8192;
/** Allocations and bitmap changes held for the next flush before one is forced (bounds their memory). */
const MAX_PENDING = 4096;
/** Largest single write we assemble when coalescing new blocks. */
const MAX_COALESCED_WRITE = 64 * 1024 * 1024;

interface PendingWrite {
  offset: number;
  data: Uint8Array;
}

/** One opened VHD file (spec: fixed, dynamic or differencing hard disk image). A single layer. */
export class VhdDisk implements VirtualDisk {
  readonly format = 'vhd' as const;
  readonly logicalSectorSize = SECTOR;
  readonly physicalSectorSize = SECTOR;
  readonly diskType: DiskType;
  readonly virtualSize: number;
  readonly blockSize: number;
  readonly readOnly: boolean;
  private readonly bitmaps = new Map<number, Uint8Array>();
  /** Where the next block goes: the offset of the end footer. */
  private nextFree: number;
  private queue: Promise<unknown> = Promise.resolve();
  /** New blocks whose BAT entries (set in memory) are not yet on disk. */
  private readonly pendingEntries = new Set<number>();
  /** New sector bitmaps of blocks already allocated, not yet on disk. */
  private readonly pendingBitmaps = new Map<number, Uint8Array>();
  private closed = false;

  private constructor(
    private readonly source: ByteSource,
    private layout: VhdLayout,
    writable: boolean,
  ) {
    this.diskType = layout.diskType;
    this.virtualSize = layout.virtualSize;
    this.blockSize = layout.diskType === 'fixed' ? DEFAULT_BLOCK_SIZE : layout.blockSize;
    this.readOnly = !writable;
    this.nextFree = layout.footerOffset;
  }

  /**
   * Wraps a parsed layout. A writable dynamic disk first gets a valid footer copy at offset 0 and a
   * footer at the true end of its data (repairing what an interrupted allocation left), because each
   * later allocation briefly relies on the copy.
   */
  static async open(source: ByteSource, layout: VhdLayout, writable: boolean): Promise<VhdDisk> {
    if (writable && source.readOnly) throw new DiskchainError('READ_ONLY', 'cannot open for writing: the file is read-only', { file: source.name });
    const disk = new VhdDisk(source, layout, writable);
    if (writable && layout.diskType !== 'fixed') await disk.settleFooters();
    return disk;
  }

  get path(): string {
    return this.source.name;
  }

  get parent(): ParentReference | undefined {
    return this.layout.parent;
  }

  identity(): LinkIdentity {
    return { format: 'vhd', uniqueId: this.layout.footer.uniqueId, timestamp: this.layout.footer.timeStamp };
  }

  details(): Record<string, unknown> {
    return vhdDetails(this.layout, this.allocatedBlocks());
  }

  async map(offset: number, length: number): Promise<Extent[]> {
    this.checkRange(offset, length);
    const out: Extent[] = [];
    const push = (o: number, n: number, state: ExtentState): void => appendExtent(out, o, n, state);
    if (this.diskType === 'fixed') {
      if (length > 0) push(offset, length, 'data');
      return out;
    }
    await this.forEachPiece(offset, length, async (block, inBlock, n, at) => {
      const entry = this.layout.bat[block]!;
      if (entry === UNALLOCATED) return push(at, n, 'transparent');
      if (this.diskType === 'dynamic') return push(at, n, 'data');
      const bm = await this.bitmap(block);
      for (const [s, count, set] of bitRuns(bm, inBlock / SECTOR, n / SECTOR)) {
        push(at + (s * SECTOR - inBlock), count * SECTOR, set ? 'data' : 'transparent');
      }
    });
    return out;
  }

  /** Reads the blocks a range covers concurrently: one turn of the event loop queues every pread. */
  async read(target: Uint8Array, offset: number): Promise<void> {
    this.checkRange(offset, target.length);
    if (this.diskType === 'fixed') return this.source.read(target, offset);
    const reads: Promise<void>[] = [];
    await this.forEachPiece(offset, target.length, async (block, inBlock, n, at) => {
      reads.push(this.readInBlock(target.subarray(at - offset, at - offset + n), block, inBlock, n));
    });
    await settleReads(reads);
  }

  private async readInBlock(dst: Uint8Array, block: number, inBlock: number, n: number): Promise<void> {
    const entry = this.layout.bat[block]!;
    if (entry === UNALLOCATED) return void dst.fill(0);
    await this.source.read(dst, this.dataOffset(entry, inBlock));
    if (this.diskType !== 'differencing') return;
    // Spec, Sector Bitmap: a clear bit in a differencing disk means "not in this file".
    const bm = await this.bitmap(block);
    for (const [s, count, set] of bitRuns(bm, inBlock / SECTOR, n / SECTOR)) {
      if (!set) dst.fill(0, s * SECTOR - inBlock, s * SECTOR - inBlock + count * SECTOR);
    }
  }

  async write(data: Uint8Array, offset: number): Promise<void> {
    if (this.readOnly) throw new DiskchainError('READ_ONLY', 'the disk is open read-only', { file: this.path });
    if (offset % SECTOR !== 0 || data.length % SECTOR !== 0) {
      throw new DiskchainError('INVALID_ARGUMENT', `write of ${data.length} bytes at ${offset} is not sector aligned`, { file: this.path, offset });
    }
    this.checkRange(offset, data.length);
    if (data.length === 0) return;
    if (this.diskType === 'fixed') return this.source.write(data, offset);
    return this.exclusive(() => this.writeSparse(data, offset));
  }

  async flush(): Promise<void> {
    await this.exclusive(() => this.commitPending());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (!this.readOnly) await this.flush();
    await this.source.close();
  }

  /**
   * Rewrites the parent fields and W2ku/W2ru locators (spec §Dynamic Disk Header Format). The VHD has no
   * log, so the order alone keeps a crash harmless: (1) when the new locator data goes past the end, the
   * footer is first written at the new end and flushed (the file always ends with a valid footer); (2)
   * the data is written into space nothing references yet, flushed; (3) the header is rewritten in one
   * 1024-byte write with its checksum, flushed. Until (3) lands the old header and its old data are
   * untouched; after it, everything it names is durable. A kill does not tear (3) when the header lies
   * in one 4 KiB page (at 512, where every writer we know puts it); a power cut could, like any sector
   * write, and the checksum then refuses the header rather than misread it.
   */
  async setParent(link: ParentLinkUpdate): Promise<void> {
    if (this.closed) throw new DiskchainError('INVALID_ARGUMENT', 'the disk is closed', { file: this.path });
    if (this.readOnly) throw new DiskchainError('READ_ONLY', 'the disk is open read-only', { file: this.path });
    if (this.diskType !== 'differencing') throw new DiskchainError('UNSUPPORTED', `a ${this.diskType} disk has no parent to rewrite`, { file: this.path });
    await this.exclusive(async () => {
      await this.commitPending();
      const current = new Uint8Array(DYNAMIC_HEADER_SIZE);
      await this.source.read(current, this.layout.headerOffset);
      const plan = planParentLink(this.layout, current, link);
      if (plan.footerAt !== undefined) {
        await this.source.write(this.layout.footerBytes, plan.footerAt);
        await this.source.flush();
      }
      for (const [at, bytes] of plan.data) await this.source.write(bytes, at);
      await this.source.flush();
      await this.source.write(plan.header, this.layout.headerOffset);
      await this.source.flush();
      this.layout = await parseVhd(this.source);
      this.nextFree = this.layout.footerOffset;
    });
  }

  /** Resize-VHD, growing only (resize.ts has the order that makes a crash leave the old size or the new). */
  async resize(size: number): Promise<void> {
    if (this.closed) throw new DiskchainError('INVALID_ARGUMENT', 'the disk is closed', { file: this.path });
    if (this.readOnly) throw new DiskchainError('READ_ONLY', 'the disk is open read-only', { file: this.path });
    checkVhdResize(this.layout, size, this.path);
    if (size === this.virtualSize) return;
    await this.exclusive(async () => {
      await this.commitPending();
      const l = this.layout;
      const footer = resizedFooter(l.footerBytes, size);
      if (l.diskType === 'fixed') {
        const oldEnd = await this.source.size();
        await this.source.write(footer, size);
        if (size + SECTOR < oldEnd) await this.source.truncate(size + SECTOR);
        await this.source.flush();
        const stale = Math.min(oldEnd, size) - l.virtualSize;
        if (stale > 0) await this.source.write(new Uint8Array(stale), l.virtualSize);
        await this.source.flush();
      } else {
        const count = Math.ceil(size / l.blockSize);
        let footerAt = l.footerOffset;
        if (count <= l.header!.maxTableEntries) {
          const tail = new Uint8Array((count - l.blockCount) * 4);
          await this.source.read(tail, l.tableOffset + l.blockCount * 4);
          if (tail.some((b) => b !== 0xff)) {
            await this.source.write(tail.fill(0xff), l.tableOffset + l.blockCount * 4);
            await this.source.flush();
          }
        } else {
          // A larger BAT where the end footer was, a footer after it; then the header names it.
          const bat = new Uint8Array(batByteLength(count)).fill(0xff);
          bat.set(encodeBatRange(l.bat, 0, l.blockCount), 0);
          const at = this.nextFree;
          footerAt = at + bat.length;
          await this.source.write(l.footerBytes, footerAt);
          await this.source.write(bat, at);
          await this.source.flush();
          const header = new Uint8Array(DYNAMIC_HEADER_SIZE);
          await this.source.read(header, l.headerOffset);
          await this.source.write(headerWithTable(header, at, count), l.headerOffset);
          await this.source.flush();
        }
        await this.source.write(footer, 0);
        await this.source.flush();
        await this.source.write(footer, footerAt);
        await this.source.flush();
      }
      this.layout = await parseVhd(this.source);
      this.bitmaps.clear();
      this.nextFree = this.layout.footerOffset;
    });
  }

  async allocatedBytes(): Promise<number> {
    return this.diskType === 'fixed' ? this.virtualSize : this.allocatedBlocks() * this.blockSize;
  }

  async fileSize(): Promise<number> {
    return this.source.size();
  }

  private allocatedBlocks(): number {
    let n = 0;
    for (const e of this.layout.bat) if (e !== UNALLOCATED) n++;
    return n;
  }

  /**
   * Spec, Block Allocation Table and Data Blocks. Data for allocated blocks is written in place. New
   * blocks (sector bitmap + data) go where the end footer was, and a footer goes right after them, so
   * a killed process leaves a file that ends with a footer (a power cut may lose it: the copy at
   * offset 0 stands in). Their BAT entries, and new bitmaps of blocks already allocated, are held in
   * memory and written at the next flush, after the data they cover is durable (commitPending). A crash
   * before then leaves the old BAT: the new blocks are unreferenced, and the next writable open cuts
   * them off. One convert or merge thus costs two flushes, not three per allocating write.
   */
  private async writeSparse(data: Uint8Array, offset: number): Promise<void> {
    const { bitmapSize, blockSize } = this.layout;
    const span = bitmapSize + blockSize;
    const fresh: PendingWrite[] = [];
    const freshBlocks: Array<[number, number, Uint8Array]> = [];
    await this.forEachPiece(offset, data.length, async (block, inBlock, n, at) => {
      const piece = data.subarray(at - offset, at - offset + n);
      const entry = this.layout.bat[block]!;
      if (entry !== UNALLOCATED) {
        await this.source.write(piece, this.dataOffset(entry, inBlock));
        if (this.diskType === 'differencing') {
          const bm = await this.bitmap(block);
          if (!allBitsSet(bm, inBlock / SECTOR, n / SECTOR)) {
            const next = new Uint8Array(bm);
            setBits(next, inBlock / SECTOR, n / SECTOR);
            this.pendingBitmaps.set(block, next);
            this.cacheBitmap(block, next);
          }
        }
        return;
      }
      const start = this.nextFree + freshBlocks.length * span;
      if ((start + span) / SECTOR > UNALLOCATED - 1) {
        throw new DiskchainError('NO_SPACE', 'the VHD file would grow past the 2 TiB its 32-bit sector offsets can address', { file: this.path });
      }
      // A dynamic disk's new block is marked fully present (as Windows and qemu do); a
      // differencing disk's only where written. Unwritten data reads as zeros (new file space).
      const bm = new Uint8Array(bitmapSize);
      if (this.diskType === 'dynamic') setBits(bm, 0, blockSize / SECTOR);
      else setBits(bm, inBlock / SECTOR, n / SECTOR);
      fresh.push({ offset: start, data: bm }, { offset: start + bitmapSize + inBlock, data: piece });
      freshBlocks.push([block, start, bm]);
    });
    if (freshBlocks.length > 0) {
      for (const w of coalesce(fresh)) await writeParts(this.source, w.parts, w.offset);
      const newEnd = this.nextFree + freshBlocks.length * span;
      await this.source.write(this.layout.footerBytes, newEnd);
      for (const [block, start, bm] of freshBlocks) {
        this.layout.bat[block] = start / SECTOR;
        this.pendingEntries.add(block);
        this.cacheBitmap(block, bm);
      }
      this.nextFree = newEnd;
      this.layout.footerOffset = newEnd;
      this.layout.dataEnd = Math.max(this.layout.dataEnd, newEnd);
    }
    if (this.pendingEntries.size + this.pendingBitmaps.size >= MAX_PENDING) await this.commitPending();
  }

  /**
   * Flushes the data, then writes the held BAT entries and bitmaps and flushes again: no entry or bit
   * ever names data that is not yet durable.
   */
  private async commitPending(): Promise<void> {
    await this.source.flush();
    if (this.pendingEntries.size === 0 && this.pendingBitmaps.size === 0) return;
    if (this.pendingEntries.size > 0) {
      const lo = Math.min(...this.pendingEntries);
      const hi = Math.max(...this.pendingEntries);
      await this.source.write(encodeBatRange(this.layout.bat, lo, hi - lo + 1), this.layout.tableOffset + lo * 4);
    }
    for (const [block, bm] of this.pendingBitmaps) await this.source.write(bm, this.layout.bat[block]! * SECTOR);
    await this.source.flush();
    this.pendingEntries.clear();
    this.pendingBitmaps.clear();
  }

  /** Makes the copy at offset 0 match the footer and puts a footer right after the last structure. */
  private async settleFooters(): Promise<void> {
    const l = this.layout;
    if (l.copyState !== 'same') {
      await this.source.write(l.footerBytes, 0);
      await this.source.flush();
      l.copyState = 'same';
    }
    if (l.footerSource === 'end' && l.endFooterState === 'ok' && l.footerOffset % SECTOR === 0) return;
    const end = Math.ceil(Math.max(l.metadataEnd, l.dataEnd) / SECTOR) * SECTOR;
    await this.source.truncate(end);
    await this.source.write(l.footerBytes, end);
    await this.source.flush();
    this.nextFree = end;
    l.footerOffset = end;
    l.footerSource = 'end';
    l.endFooterState = 'ok';
  }

  private async bitmap(block: number): Promise<Uint8Array> {
    const hit = this.pendingBitmaps.get(block) ?? this.bitmaps.get(block);
    if (hit) return hit;
    const bm = new Uint8Array(this.layout.bitmapSize);
    await this.source.read(bm, this.layout.bat[block]! * SECTOR);
    this.cacheBitmap(block, bm);
    return bm;
  }

  private cacheBitmap(block: number, bm: Uint8Array): void {
    this.bitmaps.delete(block);
    this.bitmaps.set(block, bm);
    if (this.bitmaps.size > BITMAP_CACHE_LIMIT) this.bitmaps.delete(this.bitmaps.keys().next().value!);
  }

  private dataOffset(entry: number, inBlock: number): number {
    return entry * SECTOR + this.layout.bitmapSize + inBlock;
  }

  /** Calls fn for each block-sized piece of [offset, offset+length): (block, offset in block, length, disk offset). */
  private async forEachPiece(offset: number, length: number, fn: (block: number, inBlock: number, n: number, at: number) => Promise<void>): Promise<void> {
    const bs = this.layout.blockSize;
    let at = offset;
    const end = offset + length;
    while (at < end) {
      const block = Math.floor(at / bs);
      const inBlock = at - block * bs;
      const n = Math.min(bs - inBlock, end - at);
      await fn(block, inBlock, n, at);
      at += n;
    }
  }

  private checkRange(offset: number, length: number): void {
    checkRange(this.path, this.virtualSize, offset, length);
  }

  /** Runs fn after every earlier write/flush has finished (writes must not interleave). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/** Groups writes that touch end to end (up to MAX_COALESCED_WRITE each), for one gathered write per group. */
function coalesce(writes: PendingWrite[]): Array<{ offset: number; parts: Uint8Array[] }> {
  const out: Array<{ offset: number; parts: Uint8Array[] }> = [];
  let groupEnd = -1;
  let groupLen = 0;
  for (const w of writes) {
    const last = out[out.length - 1];
    if (!last || w.offset !== groupEnd || groupLen + w.data.length > MAX_COALESCED_WRITE) {
      out.push({ offset: w.offset, parts: [w.data] });
      groupLen = 0;
    } else last.parts.push(w.data);
    groupLen += w.data.length;
    groupEnd = w.offset + w.data.length;
  }
  return out;
}
