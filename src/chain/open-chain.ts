import { realpath } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { DiskchainError } from '../io/errors.js';
import type { VirtualDisk } from '../formats/types.js';
import { DiskChain, type ChainLink } from './disk-chain.js';
import { openDisk, type OpenDiskOptions } from './open-disk.js';
import { rememberLink } from './link-store.js';
import { resolveParent } from './resolve-parent.js';

export { openDisk, type OpenDiskOptions } from './open-disk.js';

export const MAX_CHAIN_DEPTH = 256;

export interface OpenChainOptions extends OpenDiskOptions {
  /** Accept a parent whose identity does not match what the child recorded. */
  ignoreIdMismatch?: boolean;
  /** Folders searched by identity when a parent's stored paths are stale; parents may live in them. */
  searchPaths?: string[];
  /**
   * Folders every parent must be inside (after symlinks). Default: the leaf's folder (and below) and
   * the search paths. `null`: no confinement.
   */
  allowedFolders?: string[] | null;
}

/**
 * The folders parents of `leafPath` may live in under `options`. With the default confinement, a parent
 * whose link is remembered (link-store.ts) is accepted outside them, and its folder joins them for the
 * rest of the chain.
 */
function allowedFoldersFor(leafPath: string, options: OpenChainOptions): string[] | undefined {
  if (options.allowedFolders === null) return undefined;
  return options.allowedFolders ?? [dirname(resolve(leafPath)), ...(options.searchPaths ?? [])];
}

/** Opens the chain at `path`, runs fn on it and closes it, whether fn returns or throws. */
export async function withChain<T>(path: string, options: OpenChainOptions, fn: (chain: DiskChain) => Promise<T>): Promise<T> {
  const chain = await openChain(path, options);
  try {
    return await fn(chain);
  } finally {
    await chain.close();
  }
}

/** Opens a disk and every parent it names, from the leaf to the base. Parents are read-only. */
export async function openChain(path: string, options: OpenChainOptions = {}): Promise<DiskChain> {
  const layers: VirtualDisk[] = [];
  const links: ChainLink[] = [];
  const seen = new Set<string>();
  const allowedFolders = allowedFoldersFor(path, options);
  const remembered = options.allowedFolders === undefined;
  try {
    let current = await openDisk(path, options);
    layers.push(current);
    seen.add(await realpath(path));
    while (current.parent) {
      if (layers.length >= MAX_CHAIN_DEPTH) throw new DiskchainError('CHAIN_TOO_DEEP', `chain is deeper than ${MAX_CHAIN_DEPTH} layers`, { file: path });
      const found = await resolveParent(current, {
        ...(options.searchPaths ? { searchPaths: options.searchPaths } : {}),
        ...(allowedFolders ? { allowedFolders } : {}),
        ignoreIdMismatch: options.ignoreIdMismatch ?? false,
        chainRealPaths: seen,
        remembered,
      });
      if (found.admittedByMemory) allowedFolders?.push(dirname(found.realPath));
      // A parent in another folder found through --search-path: the user vouched for it; remember it.
      else if (remembered && options.searchPaths?.length && found.identityMatches) rememberLink(current.path, found.path, 'search-path');
      const parent = found.disk;
      layers.push(parent);
      seen.add(found.realPath);
      if (parent.logicalSectorSize !== current.logicalSectorSize) {
        throw new DiskchainError('PARENT_MISMATCH', `parent ${found.path} has ${parent.logicalSectorSize}-byte sectors, child ${current.logicalSectorSize}`, { file: current.path });
      }
      links.push({ parentPath: found.path, attempts: found.attempts, identityMatches: found.identityMatches, foundBy: found.foundBy });
      current = parent;
    }
    return new DiskChain(layers, links);
  } catch (e) {
    await Promise.all(layers.map((l) => l.close().catch(() => undefined)));
    throw e;
  }
}
