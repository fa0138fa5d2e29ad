import { realpath, stat } from 'node:fs/promises';
import { win32 } from 'node:path';
import { DiskchainError, isDiskchainError } from '../io/errors.js';
import type { ParentReference, VirtualDisk } from '../formats/types.js';
import { catalogFolders, parentCandidates } from './catalog.js';
import { describeIdentity, identityMatches } from './identity.js';
import { describeAttempts, isInside, parentPathCandidates, type LocateAttempt } from './locate.js';
import { rememberedParents } from './link-store.js';
import { openDisk } from './open-disk.js';

export interface ParentSearchOptions {
  /** Folders searched by identity when every stored path is stale; parents may live in them. */
  searchPaths?: string[];
  /** Folders a parent must be inside (after symlinks). Undefined: no confinement. */
  allowedFolders?: string[];
  /** Accept a parent whose identity does not match what the child recorded. */
  ignoreIdMismatch?: boolean;
  /** Real paths already in the chain: finding one of them again is a cycle. */
  chainRealPaths?: Set<string>;
  /**
   * Consult the remembered links (link-store.ts): a remembered parent of this child is tried after the
   * stored paths, and is accepted outside the allowed folders (its identity is still checked).
   */
  remembered?: boolean;
}

export interface ResolvedParent {
  disk: VirtualDisk;
  path: string;
  /** The parent's path after symlinks. */
  realPath: string;
  attempts: LocateAttempt[];
  identityMatches: boolean;
  foundBy: 'path' | 'identity' | 'remembered';
  /** Accepted because its link is remembered, though outside the allowed folders. */
  admittedByMemory: boolean;
}

/** Files looked at, at most, by one search by identity. */
const MAX_SEARCH_FILES = 20_000;
const MAX_SEARCH_DEPTH = 4;

/**
 * Finds and opens (read-only) the parent of `child`: each stored path in the spec's order, then
 * (when every path is stale) the files of the search folders by identity. A file is the parent only
 * if it carries the identity the child recorded, unless ignoreIdMismatch.
 */
export async function resolveParent(child: VirtualDisk, options: ParentSearchOptions = {}): Promise<ResolvedParent> {
  const ref = child.parent;
  if (!ref) throw new DiskchainError('INVALID_ARGUMENT', `${child.path} has no parent`, { file: child.path });
  const attempts: LocateAttempt[] = [];
  const mismatched: Array<{ disk: VirtualDisk; path: string; realPath: string; admittedByMemory: boolean }> = [];
  const tried = new Set<string>();
  // The allowed folders after symlinks, resolved once (a folder that does not exist allows nothing).
  const allowedRoots = options.allowedFolders && (await Promise.all(options.allowedFolders.map((f) => realpath(f).catch(() => undefined)))).filter((r) => r !== undefined);
  const remembered = options.remembered ? await rememberedParents(child.path) : [];
  const closeAll = async (keep?: VirtualDisk): Promise<void> => {
    for (const m of mismatched) if (m.disk !== keep) await m.disk.close().catch(() => undefined);
  };

  /** Opens `path` and says whether it is the parent; records the attempt. */
  const consider = async (key: string, stored: string, path: string): Promise<{ disk: VirtualDisk; realPath: string; admittedByMemory: boolean } | undefined> => {
    const note = (result: LocateAttempt['result'], detail?: string): undefined => {
      attempts.push({ key, stored, tried: path, result, ...(detail ? { detail } : {}) });
      return undefined;
    };
    let real: string;
    try {
      if (!(await stat(path)).isFile()) return note('not a file');
      real = await realpath(path);
    } catch {
      return note('missing');
    }
    if (tried.has(real)) return undefined;
    tried.add(real);
    if (options.chainRealPaths?.has(real)) {
      throw new DiskchainError('CHAIN_CYCLE', `${child.path} names ${path} as its parent, which is already in the chain (a cycle, a self-parent or a symlink alias)`, { file: child.path, parent: path });
    }
    const admittedByMemory = !!allowedRoots && !isInside(real, allowedRoots) && remembered.includes(real);
    if (allowedRoots && !isInside(real, allowedRoots) && !admittedByMemory) return note('outside the allowed folders', real);
    let disk: VirtualDisk;
    try {
      disk = await openDisk(path);
    } catch (e) {
      if (!isDiskchainError(e)) throw e;
      return note('unreadable', `${e.code}: ${e.message}`);
    }
    if (disk.format !== child.format) {
      await disk.close();
      return note('other format', `a ${child.format.toUpperCase()} child cannot have a ${disk.format.toUpperCase()} parent`);
    }
    if (identityMatches(ref, disk.identity())) {
      attempts.push({ key, stored, tried: path, result: 'found' });
      return { disk, realPath: real, admittedByMemory };
    }
    mismatched.push({ disk, path, realPath: real, admittedByMemory });
    return note('identity mismatch', `it has ${describeIdentity(disk.identity())}`);
  };

  try {
    for (const { entry, path } of await parentPathCandidates(child.path, ref)) {
      const found = await consider(entry.key, entry.path, path);
      if (found) return { ...found, path, attempts, identityMatches: true, foundBy: 'path' };
    }
    for (const path of remembered) {
      const found = await consider('remembered', path, path);
      if (found) return { ...found, path, attempts, identityMatches: true, foundBy: 'remembered' };
    }
    for (const path of await searchByIdentity(options.searchPaths ?? [], ref)) {
      const found = await consider('search', '', path);
      if (found) return { ...found, path, attempts, identityMatches: true, foundBy: 'identity' };
    }
  } catch (e) {
    await closeAll();
    throw e;
  }
  const first = mismatched[0];
  if (first && options.ignoreIdMismatch) {
    await closeAll(first.disk);
    return { disk: first.disk, path: first.path, realPath: first.realPath, attempts, identityMatches: false, foundBy: 'path', admittedByMemory: first.admittedByMemory };
  }
  await closeAll();
  const expected = describeIdentity(ref.expected);
  const tail = `expected ${expected}; tried ${describeAttempts(attempts)}`;
  if (first) {
    throw new DiskchainError('PARENT_MISMATCH', `no file with the identity ${child.path} recorded for its parent (the parent was changed or replaced after the child was made); ${tail}. Add --search-path to look for it by identity; if the file found does hold the content the child was made on, accept it with --ignore-id-mismatch, or record it for good with 'diskchain reparent <child> <parent> --ignore-id-mismatch'`, { file: child.path, attempts });
  }
  const other = attempts.find((a) => a.result === 'other format');
  if (other) throw new DiskchainError('PARENT_MISMATCH', `${other.detail} (${other.tried}); ${tail}`, { file: child.path, attempts });
  const outside = attempts.find((a) => a.result === 'outside the allowed folders');
  if (outside) {
    throw new DiskchainError('PATH_NOT_ALLOWED', `the parent of ${child.path} would be ${outside.detail}, outside the allowed folders (${(options.allowedFolders ?? []).join(', ')}) and not a parent diskchain remembers for it; pass --search-path with its folder to allow it (it is then remembered); ${tail}`, { file: child.path, attempts });
  }
  throw new DiskchainError('PARENT_NOT_FOUND', `parent of ${child.path} not found; ${tail}`, { file: child.path, attempts });
}

/** Disks in the folders (bounded depth and count) that carry the identity `ref` expects, those named like a locator first. */
async function searchByIdentity(folders: string[], ref: ParentReference): Promise<string[]> {
  if (folders.length === 0) return [];
  const catalog = await catalogFolders(folders, { maxDepth: MAX_SEARCH_DEPTH, maxFiles: MAX_SEARCH_FILES });
  const names = new Set(ref.locators.map((l) => win32.basename(l.path).toLowerCase()));
  const rank = (p: string): number => (names.has(win32.basename(p).toLowerCase()) ? 0 : 1);
  return parentCandidates(catalog, ref)
    .map((e) => e.path)
    .sort((a, b) => rank(a) - rank(b));
}
