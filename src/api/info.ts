import { openDisk } from '../chain/open-chain.js';
import { identityMatchedBy } from '../chain/identity.js';
import { locateParent, type LocateAttempt } from '../chain/locate.js';
import { isDiskchainError } from '../io/errors.js';
import { pendingMergeAdvice, pendingMergeFor, type PendingMerge } from '../chain/pending-merge.js';
import type { LinkIdentity, ParentLocatorEntry, VirtualDisk } from '../formats/types.js';

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
  details: Record<string, unknown>;
  /** A pending (interrupted) merge that reserves this file, and what to run. */
  pendingMerge?: PendingMerge & { advice: string };
}

/** The pending merge naming `path`, with the commands that end it. */
export async function pendingMergeInfo(path: string): Promise<(PendingMerge & { advice: string }) | undefined> {
  const pending = await pendingMergeFor(path);
  return pending ? { ...pending, advice: pendingMergeAdvice(pending) } : undefined;
}

/**
 * Facts about one disk file, and whether its parent can be found. Opens everything read-only, under
 * read locks unless `forceShare` (docs/locking.md).
 */
export async function inspect(path: string, options: { format?: 'raw'; forceShare?: boolean } = {}): Promise<DiskInfo> {
  const disk = await openDisk(path, options);
  try {
    const pendingMerge = await pendingMergeInfo(path);
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
      parent: await parentInfo(disk, options.forceShare ?? false),
      details: disk.details(),
      ...(pendingMerge ? { pendingMerge } : {}),
    };
  } finally {
    await disk.close();
  }
}

/** Where a disk's parent is and whether it carries the identity the disk recorded (null: no parent). */
export async function parentInfo(disk: VirtualDisk, forceShare = false): Promise<ParentInfo | null> {
  const ref = disk.parent;
  if (!ref) return null;
  const base = { locators: ref.locators, expected: ref.expected };
  try {
    const { path, attempts } = await locateParent(disk.path, ref);
    let matches: boolean | null = null;
    let matchedBy: 'primary' | 'alternate' | null = null;
    try {
      const parent = await openDisk(path, { forceShare });
      try {
        matchedBy = identityMatchedBy(ref, parent.identity());
        matches = matchedBy !== null;
      } finally {
        await parent.close();
      }
    } catch (e) {
      // A parent another process holds is a fact to report, not a reason to fail: its identity is unknown.
      if (!isDiskchainError(e)) throw e;
    }
    return { ...base, found: path, identityMatches: matches, matchedBy, attempts };
  } catch (e) {
    if (isDiskchainError(e) && e.code === 'PARENT_NOT_FOUND') return { ...base, found: null, identityMatches: null, matchedBy: null, attempts: (e.details.attempts as LocateAttempt[]) ?? [] };
    throw e;
  }
}
