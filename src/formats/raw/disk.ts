import type { ByteSource } from '../../io/byte-source.js';
import { DiskchainError } from '../../io/errors.js';
import type { Extent, LinkIdentity, VirtualDisk } from '../types.js';

/** A raw image: the file is the virtual disk, byte for byte. */
export class RawDisk implements VirtualDisk {
  readonly format = 'raw' as const;
  readonly diskType = 'fixed' as const;
  readonly parent = undefined;
  readonly logicalSectorSize = 512;
  readonly physicalSectorSize = 512;
  readonly blockSize = 2 * 1024 * 1024;

  constructor(
    private readonly source: ByteSource,
    readonly virtualSize: number,
  ) {}

  get path(): string {
    return this.source.name;
  }

  get readOnly(): boolean {
    return this.source.readOnly;
  }

  identity(): LinkIdentity {
    throw new DiskchainError('UNSUPPORTED', 'a raw image cannot be the parent of a differencing disk', { file: this.path });
  }

  async map(offset: number, length: number): Promise<Extent[]> {
    return length > 0 ? [{ offset, length, state: 'data' }] : [];
  }

  async read(target: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, target.length);
    await this.source.read(target, offset);
  }

  async write(data: Uint8Array, offset: number): Promise<void> {
    checkRange(this, offset, data.length);
    await this.source.write(data, offset);
  }

  async flush(): Promise<void> {
    await this.source.flush();
  }

  async close(): Promise<void> {
    await this.source.close();
  }

  async allocatedBytes(): Promise<number> {
    return this.virtualSize;
  }

  async fileSize(): Promise<number> {
    return this.source.size();
  }

  details(): Record<string, unknown> {
    return {};
  }
}

function checkRange(disk: VirtualDisk, offset: number, length: number): void {
  if (offset < 0 || offset + length > disk.virtualSize) {
    throw new DiskchainError('OUT_OF_RANGE', `range ${offset}+${length} is outside the virtual disk (${disk.virtualSize} bytes)`, { file: disk.path, offset });
  }
}
