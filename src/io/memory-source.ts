import type { ByteSource } from './byte-source.js';
import { DiskchainError } from './errors.js';

/** A growable in-memory ByteSource, for tests and scratch work. */
export class MemorySource implements ByteSource {
  readonly name: string;
  readonly readOnly: boolean;
  private buf: Uint8Array;
  private length: number;
  flushCount = 0;

  constructor(initial: Uint8Array = new Uint8Array(0), options: { name?: string; readOnly?: boolean } = {}) {
    this.name = options.name ?? 'memory';
    this.readOnly = options.readOnly ?? false;
    this.buf = new Uint8Array(initial);
    this.length = initial.length;
  }

  /** A copy of the current contents. */
  snapshot(): Uint8Array {
    return this.buf.slice(0, this.length);
  }

  async size(): Promise<number> {
    return this.length;
  }

  async read(target: Uint8Array, offset: number): Promise<void> {
    const n = await this.readAvailable(target, offset);
    if (n < target.length) {
      throw new DiskchainError('TRUNCATED', `short read: wanted ${target.length} bytes, file ends after ${n}`, { file: this.name, offset });
    }
  }

  async readAvailable(target: Uint8Array, offset: number): Promise<number> {
    if (offset >= this.length) return 0;
    const n = Math.min(target.length, this.length - offset);
    target.set(this.buf.subarray(offset, offset + n));
    return n;
  }

  async write(data: Uint8Array, offset: number): Promise<void> {
    this.assertWritable();
    this.ensureCapacity(offset + data.length);
    this.buf.set(data, offset);
    this.length = Math.max(this.length, offset + data.length);
  }

  async truncate(length: number): Promise<void> {
    this.assertWritable();
    this.ensureCapacity(length);
    if (length < this.length) this.buf.fill(0, length, this.length);
    this.length = length;
  }

  async flush(): Promise<void> {
    this.flushCount++;
  }

  async close(): Promise<void> {}

  private ensureCapacity(n: number): void {
    if (n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(n, this.buf.length * 2));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
  }

  private assertWritable(): void {
    if (this.readOnly) throw new DiskchainError('READ_ONLY', 'source is read-only', { file: this.name });
  }
}
