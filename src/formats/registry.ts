import type { ByteSource } from '../io/byte-source.js';
import { DiskchainError } from '../io/errors.js';
import { rawDriver } from './raw/driver.js';
import type { FormatDriver, FormatName } from './types.js';
import { vhdDriver } from './vhd/driver.js';
import { vhdxDriver } from './vhdx/driver.js';

/** Probed in this order: VHDX has a header signature, VHD a footer; raw is never probed. */
const PROBED: FormatDriver[] = [vhdxDriver, vhdDriver];

export function driverFor(format: FormatName): FormatDriver {
  switch (format) {
    case 'vhdx':
      return vhdxDriver;
    case 'vhd':
      return vhdDriver;
    case 'raw':
      return rawDriver;
  }
}

/** Finds the format by content, never by file name. */
export async function detectFormat(source: ByteSource): Promise<FormatDriver> {
  for (const driver of PROBED) if (await driver.probe(source)) return driver;
  throw new DiskchainError('UNKNOWN_FORMAT', 'not a VHDX or VHD file (no signature found); a raw image is read with -f raw (--source-format raw)', { file: source.name, offset: 0 });
}
