import { realpath } from 'node:fs/promises';
import { FileSource } from '../io/file-source.js';
import { DiskchainError } from '../io/errors.js';
import { detectFormat, driverFor } from '../formats/registry.js';
import type { FormatName, VirtualDisk } from '../formats/types.js';
import { DiskChain, type ChainLink } from './disk-chain.js';
import { describeIdentity, identityMatches } from './identity.js';
import { locateParent } from './locate.js';

export const MAX_CHAIN_DEPTH = 256;

export interface OpenDiskOptions {
  /** Open the file for writing (only the top layer of a chain is ever writable). */
  writable?: boolean;
  /** Skip probing: treat the file as this format (needed for raw images). */
  format?: FormatName;
}

/** Opens one file as a single layer, finding its format by content. */
export async function openDisk(path: string, options: OpenDiskOptions = {}): Promise<VirtualDisk> {
  const source = await FileSource.open(path, { writable: options.writable ?? false });
  try {
    const driver = options.format ? driverFor(options.format) : await detectFormat(source);
    return await driver.open(source, { writable: options.writable ?? false });
  } catch (e) {
    await source.close();
    throw e;
  }
}

export interface OpenChainOptions extends OpenDiskOptions {
  /** Accept a parent whose identity does not match what the child recorded. */
  ignoreIdMismatch?: boolean;
}

/** Opens a disk and every parent it names, from the leaf to the base. Parents are read-only. */
export async function openChain(path: string, options: OpenChainOptions = {}): Promise<DiskChain> {
  const layers: VirtualDisk[] = [];
  const links: ChainLink[] = [];
  const seen = new Set<string>();
  try {
    let current = await openDisk(path, options);
    layers.push(current);
    seen.add(await realpath(path));
    while (current.parent) {
      if (layers.length >= MAX_CHAIN_DEPTH) throw new DiskchainError('CHAIN_TOO_DEEP', `chain is deeper than ${MAX_CHAIN_DEPTH} layers`, { file: path });
      const { path: parentPath, attempts } = await locateParent(current.path, current.parent);
      const real = await realpath(parentPath);
      if (seen.has(real)) throw new DiskchainError('CHAIN_CYCLE', `${current.path} names ${parentPath}, which is already in its own chain`, { file: current.path });
      seen.add(real);
      const parent = await openDisk(parentPath);
      layers.push(parent);
      if (parent.format !== current.format) {
        throw new DiskchainError('PARENT_MISMATCH', `a ${current.format.toUpperCase()} child cannot have a ${parent.format.toUpperCase()} parent (${parentPath})`, { file: current.path });
      }
      const matches = identityMatches(current.parent, parent.identity());
      if (!matches && !options.ignoreIdMismatch) {
        throw new DiskchainError(
          'PARENT_MISMATCH',
          `parent ${parentPath} has ${describeIdentity(parent.identity())} but ${current.path} expects ${describeIdentity(current.parent.expected)}; it was changed after the child was made`,
          { file: current.path, parent: parentPath },
        );
      }
      if (parent.logicalSectorSize !== current.logicalSectorSize) {
        throw new DiskchainError('PARENT_MISMATCH', `parent ${parentPath} has ${parent.logicalSectorSize}-byte sectors, child ${current.logicalSectorSize}`, { file: current.path });
      }
      links.push({ parentPath, attempts, identityMatches: matches });
      current = parent;
    }
    return new DiskChain(layers, links);
  } catch (e) {
    await Promise.all(layers.map((l) => l.close().catch(() => undefined)));
    throw e;
  }
}
