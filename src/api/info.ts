import { realpath } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { openDisk } from '../chain/open-chain.js';
import { identityMatchedBy } from '../chain/identity.js';
import type { LocateAttempt } from '../chain/locate.js';
import { resolveParent } from '../chain/resolve-parent.js';
import { isDiskchainError } from '../io/errors.js';
import { driverFor } from '../formats/registry.js';
import type { Finding, FormatName, LinkIdentity, ParentLocatorEntry, VirtualDisk } from '../formats/types.js';
import { FileSource } from '../io/file-source.js';

export interface ParentInfo {
  locators: ParentLocatorEntry[];
  expected: LinkIdentity;
  /** The parent file found through the locators, or null. */
  found: string | null;
  identityMatches: boolean | null;
  /**
   * Which recorded identity the parent carries: 'primary', or 'alternate' (VHDX parent_linkage2: the
   * parent is part way through, or has finished, a merge that gave it a new DataWriteGuid). Null when
   * it does not match or was not found.
   */
  matchedBy: 'primary' | 'alternate' | null;
  attempts: LocateAttempt[];
  /** Why no parent was found (PARENT_NOT_FOUND, PATH_NOT_ALLOWED, CHAIN_CYCLE, ...), or null. */
  problem: { code: string; message: string } | null;
}

export interface DiskInfo {
  path: string;
  format: string;
  diskType: string;
  virtualSize: number;
  blockSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  fileSize: number;
  allocatedBytes: number;
  identity: LinkIdentity | null;
  parent: ParentInfo | null;
  /** Errors and warnings the structural check finds (a truncated file, blocks past its end, a dirty log); `check` explains each. */
  problems: Finding[];
  details: Record<string, unknown>;
}

/** Facts about one disk file, and whether its parent can be found. Opens everything read-only. */
export async function inspect(path: string, options: ParentSearch & { format?: FormatName } = {}): Promise<DiskInfo> {
  const disk = await openDisk(path, options.format ? { format: options.format } : {});
  try {
    return {
      path,
      format: disk.format,
      diskType: disk.diskType,
      virtualSize: disk.virtualSize,
      blockSize: disk.blockSize,
      logicalSectorSize: disk.logicalSectorSize,
      physicalSectorSize: disk.physicalSectorSize,
      fileSize: await disk.fileSize(),
      allocatedBytes: await disk.allocatedBytes(),
      identity: disk.format === 'raw' ? null : disk.identity(),
      parent: await parentInfo(disk, options),
      problems: await structuralProblems(path, disk.format),
      details: disk.details(),
    };
  } finally {
    await disk.close();
  }
}

async function structuralProblems(path: string, format: FormatName): Promise<Finding[]> {
  const source = await FileSource.open(path);
  try {
    return (await driverFor(format).check(source)).filter((f) => f.severity !== 'info');
  } finally {
    await source.close();
  }
}

export interface ParentSearch {
  /** Folders where the parent may live, searched by identity when its stored paths are stale. */
  searchPaths?: string[];
}

/**
 * Where a disk's parent is and whether it carries the identity the disk recorded (null: no parent). The
 * parent is looked for as a chain is opened: in the disk's folder, the search folders, or where a
 * remembered link says (docs/chains.md); a path outside them is reported, not opened.
 */
export async function parentInfo(disk: VirtualDisk, options: ParentSearch = {}): Promise<ParentInfo | null> {
  const ref = disk.parent;
  if (!ref) return null;
  const base = { locators: ref.locators, expected: ref.expected };
  try {
    const found = await resolveParent(disk, {
      ...(options.searchPaths ? { searchPaths: options.searchPaths } : {}),
      allowedFolders: [dirname(resolve(disk.path)), ...(options.searchPaths ?? [])],
      ignoreIdMismatch: true,
      remembered: true,
      chainRealPaths: new Set([await realpath(disk.path)]),
    });
    const matchedBy = found.identityMatches ? identityMatchedBy(ref, found.disk.identity()) : null;
    await found.disk.close();
    return { ...base, found: found.path, identityMatches: found.identityMatches, matchedBy, attempts: found.attempts, problem: null };
  } catch (e) {
    if (!isDiskchainError(e)) throw e;
    const attempts = Array.isArray(e.details.attempts) ? (e.details.attempts as LocateAttempt[]) : [];
    return { ...base, found: null, identityMatches: null, matchedBy: null, attempts, problem: { code: e.code, message: e.message } };
  }
}
