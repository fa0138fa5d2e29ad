import type { ByteSource } from '../../io/byte-source.js';

export const PAGE_SIZE = 4096;
const READAHEAD_PAGES = 64;

/**
 * A cache of 4 KiB metadata pages (BAT and sector bitmap) keyed by file offset.
 * Clean pages are bounded (least recently loaded are dropped); dirty pages stay until committed.
 * Updates reach the file only through the log (§2.3), so dirty pages are never written here.
 */
export class PageCache {
  private readonly clean = new Map<number, Uint8Array>();
  private readonly dirty = new Map<number, Uint8Array>();

  constructor(
    private readonly source: ByteSource,
    private readonly maxCleanPages = 8192,
  ) {}

  /** The page at `fileOffset` (4 KiB aligned); `limit` is the end of the structure, for readahead. */
  async get(fileOffset: number, limit: number): Promise<Uint8Array> {
    const hit = this.dirty.get(fileOffset) ?? this.clean.get(fileOffset);
    if (hit) return hit;
    const pages = Math.max(1, Math.min(READAHEAD_PAGES, Math.floor((limit - fileOffset) / PAGE_SIZE)));
    const buf = new Uint8Array(pages * PAGE_SIZE);
    await this.source.read(buf, fileOffset);
    for (let i = 0; i < pages; i++) {
      const at = fileOffset + i * PAGE_SIZE;
      if (!this.dirty.has(at) && !this.clean.has(at)) this.putClean(at, buf.slice(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
    }
    return this.clean.get(fileOffset) ?? this.dirty.get(fileOffset)!;
  }

  /** Installs a page known to be all zeros (a freshly allocated block) without reading it. */
  putZero(fileOffset: number): Uint8Array {
    const page = new Uint8Array(PAGE_SIZE);
    this.putClean(fileOffset, page);
    return page;
  }

  /** Marks a page (already obtained through get) as modified. */
  markDirty(fileOffset: number, page: Uint8Array): void {
    this.clean.delete(fileOffset);
    this.dirty.set(fileOffset, page);
  }

  get dirtyCount(): number {
    return this.dirty.size;
  }

  /** Dirty pages in file order. */
  dirtyPages(): [number, Uint8Array][] {
    return [...this.dirty.entries()].sort((a, b) => a[0] - b[0]);
  }

  /** After a commit: the pages are now in the file; keep them as clean. */
  markCommitted(offsets: number[]): void {
    for (const at of offsets) {
      const page = this.dirty.get(at);
      if (!page) continue;
      this.dirty.delete(at);
      this.putClean(at, page);
    }
  }

  private putClean(at: number, page: Uint8Array): void {
    if (this.clean.size >= this.maxCleanPages) {
      const oldest = this.clean.keys().next().value;
      if (oldest !== undefined) this.clean.delete(oldest);
    }
    this.clean.set(at, page);
  }
}
