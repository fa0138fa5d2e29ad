import { withOperationLocks } from './op-locks.js';
import { realpath } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { removeFile, renameFile } from '../io/durable.js';
import { DiskchainError, throwIfAborted } from '../io/errors.js';
import { DiskChain } from '../chain/disk-chain.js';
import { linkTo } from '../chain/link-paths.js';
import { openChain } from '../chain/open-chain.js';
import { createDisk } from '../chain/open-disk.js';
import { copyChainInto } from './convert.js';
import { findDependents } from './dependents.js';
import { syncFolder } from './journal.js';
import type { LongOperationOptions } from './progress.js';
import { ensureSpace, forecastGrowth } from './space.js';

export interface RebaseOptions extends LongOperationOptions {
  /** The ancestor the child will depend on directly. */
  onto?: string;
  /** Depend on nothing: the child becomes a standalone disk. */
  standalone?: boolean;
  searchPaths?: string[];
}

export interface RebaseResult {
  child: string;
  /** The new parent, or null when the child is now standalone. */
  parent: string | null;
  /** Layers the child no longer depends on. */
  leftBehind: string[];
  bytesCopied: number;
}

const PIECE = 8 * 1024 * 1024;

/**
 * The other direction from merge: copies into the child what it reads from the layers it leaves
 * behind, then points it at `onto` (or makes it standalone). The child reads the same at every
 * instant, so a crash leaves a correct disk and running the command again finishes it.
 */
export async function rebase(childPath: string, options: RebaseOptions): Promise<RebaseResult> {
  if (!!options.onto === !!options.standalone) throw new DiskchainError('INVALID_ARGUMENT', 'rebase needs exactly one of --onto <ancestor> and --standalone');
  // The child is write-locked for the whole command (a standalone rebase reads it, then replaces it).
  return withOperationLocks([childPath], [], () => rebaseLocked(childPath, options));
}

async function rebaseLocked(childPath: string, options: RebaseOptions): Promise<RebaseResult> {
  const chain = await openChain(childPath, { writable: !options.standalone, ...(options.searchPaths ? { searchPaths: options.searchPaths } : {}) });
  try {
    const child = chain.leaf;
    if (chain.layers.length < 2) throw new DiskchainError('INVALID_ARGUMENT', `${childPath} has no parent; it is already standalone`, { file: childPath });
    const reals = await Promise.all(chain.layers.map((l) => realpath(l.path)));
    const j = options.standalone ? chain.layers.length : reals.indexOf(await realpath(options.onto!).catch(() => resolve(options.onto!)));
    if (j < 1) throw new DiskchainError('INVALID_ARGUMENT', `${options.onto} is not an ancestor of ${childPath}; its chain is ${chain.layers.map((l) => l.path).join(' -> ')}`, { file: childPath });
    const dependents = await findDependents([{ path: child.path, identities: [child.identity()] }], new Set(reals), options.searchPaths, options.signal);
    if (dependents.length > 0) {
      throw new DiskchainError('HAS_DEPENDENTS', `refusing to rebase ${childPath}: ${dependents.map((d) => d.path).join(', ')} depend on it, and rewriting it would change the identity they recorded`, { file: childPath, dependents: dependents.map((d) => d.path) });
    }
    const leftBehind = chain.layers.slice(1, j).map((l) => l.path);
    if (options.standalone) return { child: childPath, parent: null, leftBehind, bytesCopied: await replaceWithStandalone(chain, options) };
    if (j === 1) return { child: childPath, parent: options.onto!, leftBehind, bytesCopied: 0 };
    const newParent = chain.layers[j]!;
    const mid = new DiskChain(chain.layers.slice(1, j), chain.links.slice(1, j - 1));
    const growth = await forecastGrowth(mid, child, options.signal);
    await ensureSpace(childPath, growth.bytesNeeded, `rebasing ${childPath}`);
    const bytesCopied = await copyLeftBehind(new DiskChain(chain.layers.slice(0, j), chain.links.slice(0, j - 1)), options);
    await child.flush();
    if (!child.setParent) throw new DiskchainError('UNSUPPORTED', `cannot change the parent of a ${child.format} disk`, { file: childPath });
    await child.setParent(linkTo(childPath, newParent.path, newParent.identity()));
    return { child: childPath, parent: newParent.path, leftBehind, bytesCopied };
  } finally {
    await chain.close();
  }
}

/** Writes into the leaf of `upper` every range served by one of its other layers. */
async function copyLeftBehind(upper: DiskChain, options: LongOperationOptions): Promise<number> {
  const buf = new Uint8Array(PIECE);
  const zeros = new Uint8Array(PIECE);
  const size = upper.virtualSize;
  let written = 0;
  for await (const e of upper.mapWindows(options.signal)) {
    if (!e.layer || e.state === 'absent') continue;
    for (let at = e.offset; at < e.offset + e.length; at += PIECE) {
      throwIfAborted(options.signal);
      const n = Math.min(PIECE, e.offset + e.length - at);
      if (e.state === 'data') {
        await upper.read(buf.subarray(0, n), at);
        await upper.leaf.write(buf.subarray(0, n), at);
      } else await upper.leaf.write(zeros.subarray(0, n), at);
      written += n;
      options.onProgress?.(at + n, size);
    }
  }
  return written;
}

/** Copies the whole chain into a new dynamic file beside the child, then renames it over the child. */
async function replaceWithStandalone(chain: DiskChain, options: LongOperationOptions): Promise<number> {
  const child = chain.leaf;
  const tmp = `${resolve(child.path)}.diskchain-rebase.tmp`;
  await removeFile(tmp);
  let dataBytes = 0;
  for await (const e of chain.mapWindows(options.signal)) if (e.state === 'data') dataBytes += e.length;
  await ensureSpace(child.path, dataBytes + 8 * 1024 * 1024, `making ${child.path} standalone`);
  let target;
  try {
    target = await createDisk(tmp, child.format, {
      diskType: 'dynamic',
      virtualSize: chain.virtualSize,
      logicalSectorSize: child.logicalSectorSize,
      physicalSectorSize: child.physicalSectorSize,
      blockSize: child.blockSize,
    });
  } catch (e) {
    await removeFile(tmp);
    throw e;
  }
  try {
    const { bytesWritten } = await copyChainInto(chain, target, options);
    await target.close(); // flushes: the copy is durable before it takes the child's name
    await renameFile(tmp, child.path);
    await syncFolder(dirname(resolve(child.path)));
    return bytesWritten;
  } catch (e) {
    await target.close().catch(() => undefined);
    await removeFile(tmp);
    throw e;
  }
}
