import type { ByteSource } from '../../io/byte-source.js';
import { DiskchainError } from '../../io/errors.js';
import type { CreateOptions, FormatDriver, VirtualDisk } from '../types.js';
import { RawDisk } from './disk.js';

/** Raw images have no signature: they are never probed, only named explicitly. */
export const rawDriver: FormatDriver = {
  name: 'raw',
  async probe(): Promise<boolean> {
    return false;
  },
  async open(source: ByteSource): Promise<VirtualDisk> {
    return new RawDisk(source, await source.size());
  },
  async create(source: ByteSource, options: CreateOptions): Promise<VirtualDisk> {
    if (options.parent) throw new DiskchainError('UNSUPPORTED', 'raw images cannot be differencing disks', { file: source.name });
    await source.truncate(options.virtualSize);
    return new RawDisk(source, options.virtualSize);
  },
  async check(): Promise<[]> {
    return [];
  },
};
