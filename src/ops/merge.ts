import { realpath, stat, utimes } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { removeFile } from '../io/durable.js';
import { DiskchainError } from '../io/errors.js';
import { randomGuid } from '../io/guid.js';
import type { ByteSource } from '../io/byte-source.js';
import type { LinkIdentity } from '../formats/types.js';
import { DiskChain } from '../chain/disk-chain.js';
import { describeIdentity, sameIdentity } from '../chain/identity.js';
import { linkTo } from '../chain/link-paths.js';
import { openChain, openDisk } from '../chain/open-chain.js';
import { findDependents } from './dependents.js';
import { hashChain } from './hash.js';
import { readJournal, removeJournal, syncFolder, writeJournal } from './journal.js';
import { findJournalFor, journalPathFor, type MergeJournal } from './merge-journal.js';
import { copyUpperInto } from './merge-copy.js';
import type { LongOperationOptions } from './progress.js';
import { ensureSpace, forecastGrowth, type GrowthForecast } from './space.js';

export interface MergeOptions extends LongOperationOptions {
  /** The ancestor to merge into (default: the child's parent). */
  into?: string;
  /** Keep the merged files instead of removing them once the merge is durable. */
  keep?: boolean;
  /** Hash the content before and after, and report whether they are the same. */
  verify?: boolean;
  /** Folders searched for parents by identity, and for disks that depend on the files merged. */
  searchPaths?: string[];
  /** Wraps the target's byte source (tests inject a full disk this way). */
  wrapTargetSource?: (source: ByteSource) => ByteSource;
  /** Bytes copied between two durable progress marks in the journal (default 256 MiB). */
  checkpointBytes?: number;
  /** Called when a phase starts: `copy`, `handover`, `remove`. */
  onPhase?: (phase: MergeJournal['phase']) => void;
}

export interface MergeResult {
  target: string;
  merged: string[];
  removed: string[];
  /** Disks that depended on the merged child and now name the target. */
  handedOver: string[];
  bytesCopied: number;
  resumed: boolean;
  forecast?: GrowthForecast & { freeBytes: number };
  verify?: { before: string; after: string; identical: boolean };
}

/**
 * Merge-VHD: writes what `childPath` (and every layer between) holds into an ancestor, so the
 * ancestor alone reads as the child did; hands the child's own children over to the ancestor; then
 * removes the merged files. A journal beside the ancestor makes every step resumable: run the same
 * merge again after a crash and it continues.
 */
export async function merge(childPath: string, options: MergeOptions = {}): Promise<MergeResult> {
  const found = await findJournalFor(childPath, options.into ? [options.into] : []);
  if (found) return runMerge(found.path, found.journal, options, true);
  const { journalPath, journal, forecast } = await planMerge(childPath, options);
  const result = await runMerge(journalPath, journal, options, false);
  return { ...result, forecast };
}

/** Checks everything, measures, and writes the journal; changes no disk. */
async function planMerge(childPath: string, options: MergeOptions): Promise<{ journalPath: string; journal: MergeJournal; forecast: GrowthForecast & { freeBytes: number } }> {
  const chain = await openChain(childPath, options.searchPaths ? { searchPaths: options.searchPaths } : {});
  try {
    if (chain.layers.length < 2) throw new DiskchainError('INVALID_ARGUMENT', `${childPath} has no parent: there is nothing to merge it into`, { file: childPath });
    const reals = await Promise.all(chain.layers.map((l) => realpath(l.path)));
    let k = 1;
    if (options.into) {
      const intoReal = await realpath(options.into).catch(() => resolve(options.into!));
      k = reals.indexOf(intoReal);
      if (k < 1) throw new DiskchainError('INVALID_ARGUMENT', `${options.into} is not an ancestor of ${childPath}; its chain is ${chain.layers.map((l) => l.path).join(' -> ')}`, { file: childPath });
    }
    const target = chain.layers[k]!;
    const merged = chain.layers.slice(0, k);
    for (const l of merged) {
      if (l.virtualSize !== target.virtualSize) {
        throw new DiskchainError('UNSUPPORTED', `${l.path} is ${l.virtualSize} bytes but ${target.path} is ${target.virtualSize}; merging a layer of another size is not supported`, { file: l.path });
      }
    }
    const journalPath = journalPathFor(target.path);
    if (await readJournal(journalPath)) throw new DiskchainError('JOURNAL_MISMATCH', `another merge into ${target.path} is in progress (journal ${journalPath}); finish it first`, { file: journalPath });

    // Who else depends on what changes: the target and the layers between must have no other child.
    const inChain = new Set(reals.slice(0, k + 1));
    const dependents = await findDependents(
      chain.layers.slice(0, k + 1).map((l) => ({ path: l.path, identities: [l.identity()] })),
      inChain,
      options.searchPaths,
      options.signal,
    );
    const blockers = dependents.filter((d) => d.dependsOn > 0);
    if (blockers.length > 0) {
      const list = blockers.map((b) => `${b.path} (child of ${chain.layers[b.dependsOn]!.path})`).join(', ');
      throw new DiskchainError('HAS_DEPENDENTS', `refusing to merge: ${list} depend${blockers.length === 1 ? 's' : ''} on a disk the merge would change or remove, and would be silently corrupted. Merge or convert ${blockers.length === 1 ? 'it' : 'them'} first`, {
        file: childPath,
        dependents: blockers.map((b) => b.path),
      });
    }

    const upper = new DiskChain(merged, chain.links.slice(0, k - 1));
    const growth = await forecastGrowth(upper, target, options.signal);
    const freeBytes = await ensureSpace(target.path, growth.bytesNeeded, `merging ${childPath} into ${target.path}`);
    const journal: MergeJournal = {
      operation: 'merge',
      version: 1,
      target: { path: resolve(target.path), realPath: reals[k]!, identityBefore: target.identity(), ...(target.format === 'vhdx' ? { sessionDataWriteGuid: randomGuid() } : {}) },
      layers: merged.map((l, i) => ({ path: resolve(l.path), realPath: reals[i]!, identity: l.identity() })),
      dependents: dependents.filter((d) => d.dependsOn === 0).map((d) => d.path),
      phase: 'copy',
      copiedUpTo: 0,
      keep: options.keep ?? false,
      ...(options.verify ? { hashBefore: await hashChain(chain, { ...(options.signal ? { signal: options.signal } : {}) }) } : {}),
    };
    await writeJournal(journalPath, journal);
    return { journalPath, journal, forecast: { ...growth, freeBytes } };
  } finally {
    await chain.close();
  }
}

async function runMerge(journalPath: string, journal: MergeJournal, options: MergeOptions, resumed: boolean): Promise<MergeResult> {
  let bytesCopied = 0;
  if (journal.phase === 'copy') {
    options.onPhase?.('copy');
    bytesCopied = await copyPhase(journalPath, journal, options);
    journal.phase = 'handover';
    await writeJournal(journalPath, journal);
  }
  if (journal.phase === 'handover') {
    options.onPhase?.('handover');
    const target = await openDisk(journal.target.path);
    const identity = target.identity();
    await target.close();
    for (const dependent of journal.dependents) {
      const disk = await openDisk(dependent, { writable: true });
      try {
        if (!disk.setParent) throw new DiskchainError('UNSUPPORTED', `cannot re-point ${dependent}`, { file: dependent });
        await disk.setParent(linkTo(dependent, journal.target.path, identity));
      } finally {
        await disk.close();
      }
    }
    journal.phase = 'remove';
    await writeJournal(journalPath, journal);
  }
  options.onPhase?.('remove');
  const removed: string[] = [];
  if (!journal.keep) {
    for (const layer of journal.layers) {
      await removeFile(layer.path);
      removed.push(layer.path);
    }
    for (const folder of new Set(journal.layers.map((l) => dirname(l.path)))) await syncFolder(folder);
  }
  let verify: MergeResult['verify'];
  if (journal.hashBefore) {
    const after = await openChain(journal.target.path, options.searchPaths ? { searchPaths: options.searchPaths } : {});
    try {
      const hash = await hashChain(after, { ...(options.signal ? { signal: options.signal } : {}) });
      verify = { before: journal.hashBefore, after: hash, identical: hash === journal.hashBefore };
    } finally {
      await after.close();
    }
  }
  await removeJournal(journalPath);
  return {
    target: journal.target.path,
    merged: journal.layers.map((l) => l.path),
    removed,
    handedOver: journal.dependents,
    bytesCopied,
    resumed,
    ...(verify ? { verify } : {}),
  };
}

/** Opens the chain the journal names, refusing if it changed, and copies from where the journal says. */
async function copyPhase(journalPath: string, journal: MergeJournal, options: MergeOptions): Promise<number> {
  const k = journal.layers.length;
  const childPath = journal.layers[0]!.path;
  const sessionGuid = journal.target.sessionDataWriteGuid;
  const accepted = (id: LinkIdentity): boolean => sameIdentity(id, journal.target.identityBefore) || (id.format === 'vhdx' && id.dataWriteGuid === sessionGuid);
  const chain = await openChain(childPath, { ...(options.searchPaths ? { searchPaths: options.searchPaths } : {}) });
  let upper: DiskChain | undefined;
  try {
    if (chain.layers.length <= k) throw stale(journalPath, `${childPath} no longer has the chain the journal recorded`);
    for (let i = 0; i <= k; i++) {
      const layer = chain.layers[i]!;
      const real = await realpath(layer.path);
      const want = i < k ? journal.layers[i]! : journal.target;
      if (real !== want.realPath) throw stale(journalPath, `layer ${i} is now ${real}, the journal recorded ${want.realPath}`);
      const ok = i < k ? sameIdentity(layer.identity(), journal.layers[i]!.identity) : accepted(layer.identity());
      if (!ok) throw stale(journalPath, `${layer.path} now has ${describeIdentity(layer.identity())}: it was changed after the merge started`);
    }
    // The target's child learns the DataWriteGuid the target will carry (parent_linkage2) before the
    // target changes, so the chain stays linked at every instant (MS-VHDX §2.6.2.6).
    const lowest = chain.layers[k - 1]!;
    if (sessionGuid && lowest.parent?.alternateDataWriteGuid !== sessionGuid) {
      await chain.close();
      const lowestPath = journal.layers[k - 1]!.path;
      // Bookkeeping, not new content: the file keeps its modification time, so a kept layer (--keep)
      // does not pass for the newest state of the VM in a later scan.
      const times = await stat(lowestPath);
      const disk = await openDisk(lowestPath, { writable: true });
      try {
        if (!disk.setParent || !disk.parent) throw new DiskchainError('UNSUPPORTED', `cannot record the merge in ${disk.path}`, { file: disk.path });
        await disk.setParent(linkTo(disk.path, journal.target.path, disk.parent.expected, sessionGuid));
      } finally {
        await disk.close();
      }
      await utimes(lowestPath, times.atime, times.mtime);
      return await copyPhase(journalPath, journal, options);
    }
    await chain.layers[k]!.close();
    for (const extra of chain.layers.slice(k + 1)) await extra.close();
    upper = new DiskChain(chain.layers.slice(0, k), chain.links.slice(0, k - 1));
  } catch (e) {
    await chain.close().catch(() => undefined);
    throw e;
  }
  const target = await openDisk(journal.target.path, {
    writable: true,
    ...(sessionGuid ? { dataWriteGuid: sessionGuid } : {}),
    ...(options.wrapTargetSource ? { wrapSource: options.wrapTargetSource } : {}),
  });
  try {
    return await copyUpperInto(upper, target, journal.copiedUpTo, options, options.checkpointBytes, async (upTo) => {
      await target.flush();
      journal.copiedUpTo = upTo;
      await writeJournal(journalPath, journal);
    });
  } finally {
    await target.close().catch(() => undefined);
    for (const l of upper.layers) await l.close().catch(() => undefined);
  }
}

function stale(journalPath: string, why: string): DiskchainError {
  return new DiskchainError('JOURNAL_MISMATCH', `the merge journal ${journalPath} describes a chain that has changed (${why}); it cannot be trusted. Inspect the files; remove the journal only if you are sure no merge is half done`, { file: journalPath });
}

