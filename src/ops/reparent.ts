import { withOperationLocks } from './op-locks.js';
import { realpath } from 'node:fs/promises';
import { DiskchainError } from '../io/errors.js';
import { describeIdentity, identityMatches } from '../chain/identity.js';
import { linkTo } from '../chain/link-paths.js';
import { openChain, openDisk } from '../chain/open-chain.js';

export interface ReparentOptions {
  /** Accept a parent whose identity differs from what the child recorded, and record the new one (Set-VHD -IgnoreIdMismatch). */
  ignoreIdMismatch?: boolean;
  searchPaths?: string[];
}

export interface ReparentResult {
  child: string;
  parent: string;
  identityMatched: boolean;
  /** The locator entries before the change. */
  previousLocators: Array<{ key: string; path: string }>;
}

/**
 * Set-VHD -ParentPath: points a differencing disk at `parentPath`. The new parent must have the
 * same format, virtual size and logical sector size, must not have the child in its own chain,
 * and must carry the identity the child recorded unless ignoreIdMismatch.
 */
export async function reparent(childPath: string, parentPath: string, options: ReparentOptions = {}): Promise<ReparentResult> {
  // The child is write-locked for the whole command: nobody changes it between the check and the rewrite.
  return withOperationLocks([childPath], [], () => reparentLocked(childPath, parentPath, options));
}

async function reparentLocked(childPath: string, parentPath: string, options: ReparentOptions): Promise<ReparentResult> {
  const child = await openDisk(childPath);
  let identity;
  let identityMatched: boolean;
  const previousLocators = child.parent?.locators.map((l) => ({ key: l.key, path: l.path })) ?? [];
  try {
    const ref = child.parent;
    if (!ref) throw new DiskchainError('INVALID_ARGUMENT', `${childPath} is a ${child.diskType} disk, not a differencing one: it has no parent to change`, { file: childPath });
    const parentChain = await openChain(parentPath, { ...(options.searchPaths ? { searchPaths: options.searchPaths } : {}) });
    try {
      const parent = parentChain.leaf;
      const childReal = await realpath(childPath);
      for (const layer of parentChain.layers) {
        if ((await realpath(layer.path)) === childReal) throw new DiskchainError('CHAIN_CYCLE', `${parentPath} has ${childPath} in its own chain: making it the parent would create a cycle`, { file: childPath });
      }
      const refuse = (what: string, c: string | number, p: string | number): never => {
        throw new DiskchainError('PARENT_MISMATCH', `${parentPath} cannot be the parent of ${childPath}: ${what} differs (child ${c}, parent ${p})`, { file: childPath, parent: parentPath });
      };
      if (parent.format !== child.format) refuse('the format', child.format, parent.format);
      if (parent.virtualSize !== child.virtualSize) refuse('the virtual size', child.virtualSize, parent.virtualSize);
      if (parent.logicalSectorSize !== child.logicalSectorSize) refuse('the logical sector size', child.logicalSectorSize, parent.logicalSectorSize);
      identity = parent.identity();
      identityMatched = identityMatches(ref, identity);
      if (!identityMatched && !options.ignoreIdMismatch) {
        throw new DiskchainError(
          'PARENT_MISMATCH',
          `${parentPath} has ${describeIdentity(identity)} but ${childPath} was made on a parent with ${describeIdentity(ref.expected)}; its content may not be what the child was made on. Pass --ignore-id-mismatch if you know it is`,
          { file: childPath, parent: parentPath },
        );
      }
    } finally {
      await parentChain.close();
    }
  } finally {
    await child.close();
  }
  const writable = await openDisk(childPath, { writable: true });
  try {
    if (!writable.setParent) throw new DiskchainError('UNSUPPORTED', `cannot change the parent of a ${writable.format} disk`, { file: childPath });
    await writable.setParent(linkTo(childPath, parentPath, identity));
  } finally {
    await writable.close();
  }
  return { child: childPath, parent: parentPath, identityMatched, previousLocators };
}
