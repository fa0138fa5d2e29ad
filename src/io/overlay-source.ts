import type { ByteSource } from './byte-source.js';
import { DiskchainError } from './errors.js';

export interface OverlayWrite {
  offset: number;
  /** Bytes to place at offset; absent means `length` zero bytes. */
  data?: Uint8Array;
  length: number;
}

/**
 * A read-only view of a source with writes laid over it (later writes win) and a size that
 * may exceed the base's: used to see a file as it will be after log replay without changing it.
 */
export class OverlaySource implements ByteSource {
  readonly readOnly = true;

  constructor(
    private readonly base: ByteSource,
    private readonly writes: OverlayWrite[],
    private readonly virtualFileSize: number,
  ) {}

  get name(): string {
    return this.base.name;
  }

  async size(): Promise<number> {
    return this.virtualFileSize;
  }

  async read(target: Uint8Array, offset: number): Promise<void> {
    const n = await this.readAvailable(target, offset);
    if (n < target.length) {
      throw new DiskchainError('TRUNCATED', `short read: wanted ${target.length} bytes, file ends after ${n}`, { file: this.name, offset });
    }
  }

  async readAvailable(target: Uint8Array, offset: number): Promise<number> {
    const want = Math.max(0, Math.min(target.length, this.virtualFileSize - offset));
    const view = target.subarray(0, want);
    const got = await this.base.readAvailable(view, offset);
    view.fill(0, got);
    for (const w of this.writes) {
      const from = Math.max(offset, w.offset);
      const to = Math.min(offset + want, w.offset + w.length);
      if (from >= to) continue;
      if (w.data) view.set(w.data.subarray(from - w.offset, to - w.offset), from - offset);
      else view.fill(0, from - offset, to - offset);
    }
    return want;
  }

  async write(): Promise<void> {
    throw new DiskchainError('READ_ONLY', 'an overlay is read-only', { file: this.name });
  }

  async truncate(): Promise<void> {
    throw new DiskchainError('READ_ONLY', 'an overlay is read-only', { file: this.name });
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    await this.base.close();
  }
}
