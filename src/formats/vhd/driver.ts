import type { ByteSource } from '../../io/byte-source.js';
import type { CreateOptions, Finding, FormatDriver, OpenOptions, VirtualDisk } from '../types.js';
import { checkVhd } from './check.js';
import { FOOTER_SIZE, OLD_FOOTER_SIZE } from './constants.js';
import { writeNewVhd } from './create.js';
import { VhdDisk } from './disk.js';
import { hasFooterCookie } from './footer.js';
import { parseVhd } from './layout.js';

/** The VHD driver (Virtual PC / Hyper-V 2008 / Disk2vhd / Azure .vhd and .avhd files). */
export const vhdDriver: FormatDriver = {
  name: 'vhd',

  /** Spec, Hard Disk Footer Format: the cookie 'conectix' in the last 512 (or 511) bytes, or at offset 0. */
  async probe(source: ByteSource): Promise<boolean> {
    const size = await source.size();
    const buf = new Uint8Array(8);
    for (const at of [size - FOOTER_SIZE, size - OLD_FOOTER_SIZE, 0]) {
      if (at < 0 || at + 8 > size) continue;
      await source.read(buf, at);
      if (hasFooterCookie(buf)) return true;
    }
    return false;
  },

  async open(source: ByteSource, options: OpenOptions = {}): Promise<VirtualDisk> {
    return VhdDisk.open(source, await parseVhd(source), options.writable ?? false);
  },

  async create(source: ByteSource, options: CreateOptions): Promise<VirtualDisk> {
    await writeNewVhd(source, options);
    return VhdDisk.open(source, await parseVhd(source), true);
  },

  async check(source: ByteSource): Promise<Finding[]> {
    return checkVhd(source);
  },
};
