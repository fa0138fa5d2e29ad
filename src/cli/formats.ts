import { extname } from 'node:path';
import { Option } from 'commander';
import type { FormatName } from '../formats/types.js';
import { DiskchainError } from '../io/errors.js';

/**
 * Formats on the command line. A disk that is opened is found by content unless -f/--source-format names
 * its format (as qemu-img's -f does; raw images have no signature). A disk that is made takes the format
 * given (-O/--output-format, or create's --format), else the one its name says, as Hyper-V's New-VHD and
 * Convert-VHD decide by extension; a name and a format that disagree are refused.
 */

const FORMATS: readonly FormatName[] = ['vhdx', 'vhd', 'raw'];

const BY_EXTENSION: Record<string, FormatName> = { '.vhdx': 'vhdx', '.avhdx': 'vhdx', '.vhd': 'vhd', '.avhd': 'vhd', '.raw': 'raw', '.img': 'raw' };

/** `.addOption(sourceFormatOption())`: the format of the disk opened, when it cannot be found by content. */
export function sourceFormatOption(what = 'the disk'): Option {
  return new Option('-f, --source-format <format>', `the format of ${what}: vhdx, vhd or raw (default: found by content; a raw image has no signature, so it needs -f raw)`).choices(FORMATS);
}

/** The openDisk/openChain option for a parsed -f. */
export function sourceFormat(opts: { sourceFormat?: string }): { format?: FormatName } {
  return opts.sourceFormat ? { format: parseFormat(opts.sourceFormat, '--source-format') } : {};
}

export function parseFormat(value: string, flag: string): FormatName {
  if ((FORMATS as readonly string[]).includes(value)) return value as FormatName;
  throw new DiskchainError('INVALID_ARGUMENT', `${flag} must be vhdx, vhd or raw, not ${value}`);
}

/** The format a file name's extension says (.vhdx .avhdx .vhd .avhd .raw .img), if any. */
export function formatOfName(path: string): FormatName | undefined {
  return BY_EXTENSION[extname(path).toLowerCase()];
}

/** The format of a disk to be made at `target`: the one given, else the name's, else `fallback`; a contradiction is refused. */
export function targetFormat(target: string, given: string | undefined, flag: string, fallback: FormatName): FormatName {
  const byName = formatOfName(target);
  if (given === undefined) return byName ?? fallback;
  const format = parseFormat(given, flag);
  if (byName && byName !== format) {
    throw new DiskchainError('INVALID_ARGUMENT', `${target} is named like a ${byName.toUpperCase()} file but ${flag} says ${format}; rename the target or drop ${flag}`);
  }
  return format;
}

/** Refuses options that would be ignored: each entry is [given?, flag], and `why` says what makes them meaningless. */
export function refuseIgnored(options: Array<[unknown, string]>, why: string): void {
  const given = options.filter(([value]) => value !== undefined).map(([, flag]) => flag);
  if (given.length > 0) throw new DiskchainError('INVALID_ARGUMENT', `${given.join(', ')} ${given.length > 1 ? 'do' : 'does'} not apply ${why}; drop ${given.length > 1 ? 'them' : 'it'}`);
}
