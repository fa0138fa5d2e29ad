import type { ByteSource } from '../../io/byte-source.js';
import { descriptorSectors, encodeEntry, LOG_SECTOR } from './log-entry.js';

/**
 * §2.3 Writes metadata updates through the log: entry, flush, apply, flush.
 * Each entry is applied before the next is written, so each is a sequence of one (Tail = itself).
 */
export class LogWriter {
  private head = 0;

  constructor(
    private readonly source: ByteSource,
    private readonly logOffset: number,
    private readonly logLength: number,
    private readonly logGuid: string,
    private sequenceNumber: bigint,
  ) {}

  /** The most pages one entry can carry in this log. */
  get maxPagesPerEntry(): number {
    return maxPagesPerEntry(this.logLength);
  }

  /**
   * Makes `pages` ([file offset, 4 KiB]) durable at their final places, crash-safely.
   * `flushedFileOffset` is a file size already stable on disk; `lastFileOffset` holds every allocation.
   */
  async commit(pages: [number, Uint8Array][], flushedFileOffset: number, lastFileOffset: number): Promise<void> {
    const max = this.maxPagesPerEntry;
    for (let i = 0; i < pages.length; i += max) {
      const batch = pages.slice(i, i + max);
      const length = (descriptorSectors(batch.length) + batch.length) * LOG_SECTOR;
      // We never wrap an entry around the end of the log: it starts again at 0 (every older entry is applied).
      if (this.head + length > this.logLength) this.head = 0;
      const entry = encodeEntry({ tail: this.head, sequenceNumber: this.sequenceNumber, logGuid: this.logGuid, flushedFileOffset, lastFileOffset, pages: batch });
      await this.source.write(entry, this.logOffset + this.head);
      await this.source.flush();
      for (const [offset, page] of batch) await this.source.write(page, offset);
      await this.source.flush();
      this.head += entry.length;
      this.sequenceNumber++;
    }
  }
}

/** §2.3.1 The most 4 KiB pages one entry (descriptor sectors plus data sectors) can carry in a log of `logLength` bytes. */
export function maxPagesPerEntry(logLength: number): number {
  const sectors = logLength / LOG_SECTOR;
  let n = sectors - 1;
  while (n > 0 && descriptorSectors(n) + n > sectors) n--;
  return n;
}
