import type { ByteSource } from '../../io/byte-source.js';
import type { CreateOptions, Finding, FormatDriver, OpenOptions, VirtualDisk } from '../types.js';
import { checkVhdx } from './check.js';
import { createVhdx } from './create.js';
import { hasFileIdentifierSignature } from './file-identifier.js';
import { openVhdx } from './open.js';

export const vhdxDriver: FormatDriver = {
  name: 'vhdx',
  async probe(source: ByteSource): Promise<boolean> {
    const head = new Uint8Array(8);
    return (await source.readAvailable(head, 0)) === 8 && hasFileIdentifierSignature(head);
  },
  open(source: ByteSource, options?: OpenOptions): Promise<VirtualDisk> {
    return openVhdx(source, options);
  },
  create(source: ByteSource, options: CreateOptions): Promise<VirtualDisk> {
    return createVhdx(source, options);
  },
  check(source: ByteSource): Promise<Finding[]> {
    return checkVhdx(source);
  },
};
