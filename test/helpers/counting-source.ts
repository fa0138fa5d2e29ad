import type { ByteSource } from '../../src/io/byte-source.js';

/** Work done through a ByteSource: what tests bound instead of time. */
export interface IoCounts {
  reads: number;
  bytesRead: number;
  writes: number;
  bytesWritten: number;
  flushes: number;
}

export function zeroCounts(): IoCounts {
  return { reads: 0, bytesRead: 0, writes: 0, bytesWritten: 0, flushes: 0 };
}

/** Passes every call to `inner` and adds what it asked for to `counts` (shared, so several sources can add to one tally). */
export class CountingSource implements ByteSource {
  constructor(
    private readonly inner: ByteSource,
    readonly counts: IoCounts = zeroCounts(),
  ) {}
  get name(): string {
    return this.inner.name;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  size(): Promise<number> {
    return this.inner.size();
  }
  read(target: Uint8Array, offset: number): Promise<void> {
    this.counts.reads++;
    this.counts.bytesRead += target.length;
    return this.inner.read(target, offset);
  }
  async readAvailable(target: Uint8Array, offset: number): Promise<number> {
    this.counts.reads++;
    const n = await this.inner.readAvailable(target, offset);
    this.counts.bytesRead += n;
    return n;
  }
  write(data: Uint8Array, offset: number): Promise<void> {
    this.counts.writes++;
    this.counts.bytesWritten += data.length;
    return this.inner.write(data, offset);
  }
  truncate(length: number): Promise<void> {
    return this.inner.truncate(length);
  }
  flush(): Promise<void> {
    this.counts.flushes++;
    return this.inner.flush();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}
