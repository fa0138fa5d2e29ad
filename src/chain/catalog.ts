import { readdir, realpath, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { DiskchainError, isDiskchainError, throwIfAborted } from '../io/errors.js';
import type { DiskType, LinkIdentity, ParentReference, VirtualDisk } from '../formats/types.js';
import { identityMatches } from './identity.js';
import { openDisk } from './open-disk.js';

export interface CatalogEntry {
  /** Absolute path as found. */
  path: string;
  /** fs.realpath of it: symlink aliases share one realPath, and each real file is listed once. */
  realPath: string;
  format: 'vhdx' | 'vhd';
  diskType: DiskType;
  virtualSize: number;
  logicalSectorSize: number;
  fileSize: number;
  allocatedBytes: number;
  mtimeMs: number;
  /** What a child must record to name this disk. */
  identity: LinkIdentity;
  /** From details(): virtualDiskId (VHDX) or uniqueId (VHD). */
  virtualDiskId?: string;
  /** Differencing disks: what this disk records about its parent. */
  parent?: ParentReference;
  /** VHDX whose header names an active log (not cleanly closed); a read-only open replays it in memory. */
  dirtyLog: boolean;
}

export interface CatalogProblem {
  path: string;
  code: string;
  message: string;
  offset?: number;
}

export interface Catalog {
  folders: string[];
  entries: CatalogEntry[];
  problems: CatalogProblem[];
}

export interface CatalogOptions {
  signal?: AbortSignal;
  /** Folder levels below each given folder that are walked (default 8). */
  maxDepth?: number;
  /** Regular files probed at most, over all folders (default 100000). */
  maxFiles?: number;
}

const DEFAULT_MAX_DEPTH = 8;
const DEFAULT_MAX_FILES = 100_000;
/** Files opened at the same time while probing. */
const CONCURRENCY = 8;

interface Found {
  path: string;
  realPath: string;
}

/**
 * Walks the folders (recursively, bounded), probes every regular file by content (names and
 * extensions lie), opens each VHD/VHDX read-only. Files that are not disks are ignored; files that
 * look like disks but fail to open become problems. A file given instead of a folder is probed too.
 */
export async function catalogFolders(folders: string[], options: CatalogOptions = {}): Promise<Catalog> {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
  const maxFiles = options.maxFiles ?? DEFAULT_MAX_FILES;
  if (!Number.isInteger(maxDepth) || maxDepth < 0) throw new DiskchainError('INVALID_ARGUMENT', `maxDepth must be a whole number >= 0, not ${maxDepth}`);
  if (!Number.isInteger(maxFiles) || maxFiles < 1) throw new DiskchainError('INVALID_ARGUMENT', `maxFiles must be a whole number >= 1, not ${maxFiles}`);
  if (folders.length === 0) throw new DiskchainError('INVALID_ARGUMENT', 'no folder to scan');

  const problems: CatalogProblem[] = [];
  const found: Found[] = [];
  const visitedDirs = new Set<string>();
  let limitHit = false;

  const addFile = async (path: string): Promise<void> => {
    if (found.length >= maxFiles) {
      if (!limitHit) problems.push({ path, code: 'TOO_MANY_FILES', message: `more than ${maxFiles} files: the rest were not scanned` });
      limitHit = true;
      return;
    }
    try {
      found.push({ path, realPath: await realpath(path) });
    } catch (e) {
      problems.push({ path, code: 'IO', message: `cannot resolve: ${(e as Error).message}` });
    }
  };

  const walk = async (dir: string, depth: number): Promise<void> => {
    throwIfAborted(options.signal);
    let real: string;
    try {
      real = await realpath(dir);
    } catch (e) {
      problems.push({ path: dir, code: 'IO', message: `cannot resolve folder: ${(e as Error).message}` });
      return;
    }
    // A folder reached twice (a symlink loop or an alias) is walked once.
    if (visitedDirs.has(real)) return;
    visitedDirs.add(real);
    let names;
    try {
      names = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      problems.push({ path: dir, code: 'IO', message: `cannot list folder: ${(e as Error).message}` });
      return;
    }
    names.sort((a, b) => compare(a.name, b.name));
    for (const d of names) {
      if (limitHit) return;
      const path = join(dir, d.name);
      let kind: 'file' | 'dir' | 'other' = d.isFile() ? 'file' : d.isDirectory() ? 'dir' : 'other';
      if (d.isSymbolicLink()) {
        const target = await stat(path).catch(() => undefined);
        kind = target?.isFile() ? 'file' : target?.isDirectory() ? 'dir' : 'other';
      }
      if (kind === 'file') await addFile(path);
      else if (kind === 'dir') {
        if (depth < maxDepth) await walk(path, depth + 1);
        else problems.push({ path, code: 'TOO_DEEP', message: `not scanned: more than ${maxDepth} folder levels below the scanned folder` });
      }
      // Sockets, FIFOs and devices are never opened (a FIFO would block).
    }
  };

  const roots: string[] = [];
  const rootReals = new Set<string>();
  for (const folder of folders) {
    const abs = resolve(folder);
    const s = await stat(abs).catch(() => undefined);
    if (!s) throw new DiskchainError('INVALID_ARGUMENT', `${folder} does not exist`, { file: abs });
    const real = await realpath(abs);
    if (rootReals.has(real)) continue;
    rootReals.add(real);
    roots.push(abs);
    if (s.isDirectory()) await walk(abs, 0);
    else if (s.isFile()) await addFile(abs);
    else throw new DiskchainError('INVALID_ARGUMENT', `${folder} is neither a folder nor a regular file`, { file: abs });
  }

  const entries: CatalogEntry[] = [];
  const files = uniqueByRealPath(found);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < files.length) {
      const file = files[next++]!;
      throwIfAborted(options.signal);
      const result = await catalogFile(file);
      if (result === null) continue;
      if ('code' in result) problems.push(result);
      else entries.push(result);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, files.length) }, worker));
  entries.sort((a, b) => compare(a.path, b.path));
  problems.sort((a, b) => compare(a.path, b.path));
  return { folders: roots, entries, problems };
}

/** One path per real file: the real path itself when it was found, else the first alias in order. */
function uniqueByRealPath(found: Found[]): Found[] {
  const byReal = new Map<string, Found>();
  for (const f of [...found].sort((a, b) => compare(a.path, b.path))) {
    const seen = byReal.get(f.realPath);
    if (!seen || (f.path === f.realPath && seen.path !== seen.realPath)) byReal.set(f.realPath, f);
  }
  return [...byReal.values()];
}

/** Opens one file read-only: an entry, a problem, or null when it is not a VHD/VHDX at all. */
async function catalogFile(file: Found): Promise<CatalogEntry | CatalogProblem | null> {
  let disk: VirtualDisk;
  try {
    disk = await openDisk(file.path, { forceShare: true });
  } catch (e) {
    return isDiskchainError(e) && e.code === 'UNKNOWN_FORMAT' ? null : problemOf(file.path, e);
  }
  try {
    if (disk.format === 'raw') return null;
    const details = disk.details();
    const id = disk.format === 'vhdx' ? details.virtualDiskId : details.uniqueId;
    const s = await stat(file.path);
    return {
      path: file.path,
      realPath: file.realPath,
      format: disk.format,
      diskType: disk.diskType,
      virtualSize: disk.virtualSize,
      logicalSectorSize: disk.logicalSectorSize,
      fileSize: s.size,
      allocatedBytes: await disk.allocatedBytes(),
      mtimeMs: s.mtimeMs,
      identity: disk.identity(),
      ...(typeof id === 'string' ? { virtualDiskId: id } : {}),
      ...(disk.parent ? { parent: disk.parent } : {}),
      dirtyLog: disk.format === 'vhdx' && typeof details.logReplay === 'string' && details.logReplay !== 'not needed',
    };
  } catch (e) {
    return problemOf(file.path, e);
  } finally {
    await disk.close().catch(() => undefined);
  }
}

function problemOf(path: string, e: unknown): CatalogProblem {
  if (isDiskchainError(e)) {
    const offset = e.details.offset;
    return { path, code: e.code, message: e.message, ...(typeof offset === 'number' ? { offset } : {}) };
  }
  // A reader bug on hostile input must not end a scan of thousands of files; it is reported instead.
  return { path, code: 'INTERNAL', message: e instanceof Error ? e.message : String(e) };
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Entries whose recorded parent identity is satisfied by `identity`. */
export function childrenOf(catalog: Catalog, identity: LinkIdentity): CatalogEntry[] {
  return catalog.entries.filter((e) => e.parent !== undefined && identityMatches(e.parent, identity));
}

/** Entries whose identity satisfies `ref` (the candidates for a child's parent). */
export function parentCandidates(catalog: Catalog, ref: ParentReference): CatalogEntry[] {
  return catalog.entries.filter((e) => identityMatches(ref, e.identity));
}
