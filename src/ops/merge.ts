import { realpath, stat, utimes } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { removeFile, syncFile } from '../io/durable.js';
import { DiskchainError, isDiskchainError } from '../io/errors.js';
import { randomGuid } from '../io/guid.js';
import type { ByteSource } from '../io/byte-source.js';
import type { VirtualDisk } from '../formats/types.js';
import { DiskChain } from '../chain/disk-chain.js';
import { linkTo } from '../chain/link-paths.js';
import { openChain, openDisk } from '../chain/open-chain.js';
import { pendingMergeAdvice, pendingMergeFor } from '../chain/pending-merge.js';
import { findDependents } from './dependents.js';
import { hashChain } from './hash.js';
import { syncFolder } from './journal.js';
import { checkDependent, checkLayer, checkTarget, diskIdOf, fingerprint, journalRefused, targetAcceptedInCopy, type Checker } from './merge-identity.js';
import {
  dependentPath,
  findJournalFor,
  journalPathFor,
  loadJournal,
  refuseIfPending,
  removeJournalAndRefs,
  reservedFiles,
  writeJournal,
  writeRefs,
  type FoundJournal,
  type JournalDependent,
  type MergeJournal,
  type MergePhase,
} from './merge-journal.js';
import { copyUpperInto } from './merge-copy.js';
import { OperationLocks } from './op-locks.js';
import type { LongOperationOptions } from './progress.js';
import { ensureSpace, forecastGrowth, type GrowthForecast } from './space.js';

/**
 * Merge-VHD: writes what a child (and every layer between) holds into an ancestor, so the ancestor
 * alone reads as the child did; hands the child's own children over to the ancestor; removes the
 * merged files. A state machine whose state is the journal beside the target
 * (`<target>.diskchain-merge.json`, merge-journal.ts); each arrow is one durable journal write:
 *
 *   plan ──► copy ──► verify ──► handover ──► remove ──► done
 *
 * | phase    | does                                              | checks first (every run, resumed or not)          |
 * |----------|---------------------------------------------------|---------------------------------------------------|
 * | plan     | locks, refusals (dependents, space, other merges), | the chain opens; no other merge reserves a file    |
 * |          | fingerprints, hash (--verify); writes the journal  |                                                   |
 * | copy     | data into the target from `copiedUpTo` on (after   | each layer: place, identity, fingerprint; the      |
 * |          | linking the lowest layer to the session's VHDX     | target: place, identity before or the session's    |
 * |          | DataWriteGuid); records the target's new identity  |                                                   |
 * | verify   | --verify: hashes the target's chain, compares      | the target: identity and fingerprint after copy    |
 * | handover | re-points the child's children at the target       | the target; each child: place, disk id, its link   |
 * | remove   | deletes the merged layers (unless --keep), then    | the target; each layer before it is deleted        |
 * |          | the journal, then its pointers                     |                                                   |
 *
 * Nothing is destroyed before verify: until handover every file but the target is as it was, and the
 * merged child reads as before throughout. A file that fails its check is never changed or deleted:
 * the merge stops (JOURNAL_MISMATCH) with everything in place, saying what is pending; `--abandon`
 * (merge-abandon.ts) is the way out. The merge holds write locks on the files it changes for its
 * whole run, and while its journal exists no one else may open them for writing (docs/locking.md).
 * A resumed merge follows a new `--keep` while nothing is removed yet, and refuses a different
 * `--into` or a `--verify` it can no longer honour.
 */
export interface MergeOptions extends LongOperationOptions {
  /** The ancestor to merge into (default: the child's parent). */
  into?: string;
  /** Keep the merged files instead of removing them once the merge is durable (default: as the pending journal says, else false). */
  keep?: boolean;
  /** Hash the content before, and the target's after, and stop before anything is destroyed if they differ. */
  verify?: boolean;
  /** Folders searched for parents by identity, and for disks that depend on the files merged. */
  searchPaths?: string[];
  /** Wraps the target's byte source (tests inject a full disk this way). */
  wrapTargetSource?: (source: ByteSource) => ByteSource;
  /** Bytes copied between two durable progress marks in the journal (default 256 MiB). */
  checkpointBytes?: number;
  /** Called when a phase starts: `copy`, `verify` (with --verify), `handover`, `remove`. */
  onPhase?: (phase: MergePhase) => void;
  /**
   * Hands a child over through a handle the caller already holds open for writing (a running VM's
   * served leaf, which no second handle may write): calls `handOver` with it and resolves true, or
   * resolves false and the merge opens the file itself.
   */
  withOpenDependent?: (path: string, handOver: (disk: VirtualDisk) => Promise<void>) => Promise<boolean>;
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

export async function merge(childPath: string, options: MergeOptions = {}): Promise<MergeResult> {
  const found = await findPendingMerge(childPath, options);
  const locks = new OperationLocks();
  let journalPath: string | undefined;
  try {
    if (found) {
      journalPath = claim(found.path);
      await reconcile(found, options);
      await locks.take(await existing(reservedFiles(found.journal)), 'write');
      return await run(found.path, found.journal, options, true);
    }
    const planned = await plan(childPath, options, locks, (path) => (journalPath = claim(path)));
    return { ...(await run(planned.journalPath, planned.journal, options, false)), forecast: planned.forecast };
  } finally {
    if (journalPath) unclaim(journalPath);
    await locks.release();
  }
}

/**
 * Merges running in this process, by journal. Locks of one process share a file, so two merges into
 * one target in one process (a console's two requests) are kept apart here.
 */
const running = new Set<string>();

export function unclaim(journalPath: string): void {
  running.delete(journalPath);
}

/** Marks the merge with this journal as running in this process (LOCKED if it already is); merge-abandon.ts uses it too. */
export function claim(journalPath: string): string {
  if (running.has(journalPath)) throw new DiskchainError('LOCKED', `a merge into the same target is running in this process (journal ${journalPath})`, { file: journalPath, heldBy: 'diskchain', holder: { pid: process.pid } });
  running.add(journalPath);
  return journalPath;
}

/**
 * The pending merge of `childPath`: a journal beside it, beside --into, or named by the pointer beside
 * it. A pending merge that reserves the child in another role is refused with what to run.
 */
export async function findPendingMerge(childPath: string, options: Pick<MergeOptions, 'into'> = {}): Promise<FoundJournal | undefined> {
  const found = await findJournalFor(childPath, options.into ? [options.into] : []);
  if (found) return found;
  const pending = await pendingMergeFor(childPath);
  if (!pending) return undefined;
  const loaded = await loadJournal(pending);
  if (pending.role === 'layer' && (await sameFile(loaded.journal.layers[0]!.path, childPath))) return loaded;
  throw new DiskchainError('LOCKED', `${childPath} is part of another merge: ${pendingMergeAdvice(pending)}`, { file: childPath, heldBy: 'merge', pendingMerge: pending });
}

async function sameFile(a: string, b: string): Promise<boolean> {
  const [ra, rb] = await Promise.all([realpath(a).catch(() => resolve(a)), realpath(b).catch(() => resolve(b))]);
  return ra === rb;
}

async function existing(paths: string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) if (await stat(p).catch(() => undefined)) out.push(p);
  return out;
}

/** A resumed merge and the new command line: follow what can be followed, refuse the rest. */
async function reconcile(found: FoundJournal, options: MergeOptions): Promise<void> {
  const { journal, path } = found;
  const child = journal.layers[0]!.path;
  const pending = `a merge of ${child} into ${journal.target.path} is pending (phase ${journal.phase}, journal ${path})`;
  const ways = `run 'diskchain merge ${child}' to finish it as it was started, or 'diskchain merge --abandon ${child}' to roll back what can be rolled back`;
  if (options.into && !(await sameFile(options.into, journal.target.path))) {
    throw new DiskchainError('JOURNAL_MISMATCH', `--into ${options.into} differs: ${pending}; ${ways}`, { file: path });
  }
  if (options.keep !== undefined && options.keep !== journal.keep) {
    if (journal.phase === 'remove' && !journal.keep) {
      throw new DiskchainError('JOURNAL_MISMATCH', `--keep is too late: ${pending} and has started removing the merged files; ${ways}`, { file: path });
    }
    journal.keep = options.keep;
    await writeJournal(path, journal);
  }
  if (options.verify && !journal.hashBefore) {
    if (journal.phase !== 'copy') {
      throw new DiskchainError('JOURNAL_MISMATCH', `--verify cannot be honoured: ${pending}, past the point where the content before the merge can be hashed; ${ways.replace('as it was started', 'without --verify')}`, { file: path });
    }
    // During the copy the merged child still reads as before: its chain gives the hash "before".
    const chain = await openChain(child, options.searchPaths ? { searchPaths: options.searchPaths } : {});
    try {
      journal.hashBefore = await hashChain(chain, options.signal ? { signal: options.signal } : {});
    } finally {
      await chain.close();
    }
    await writeJournal(path, journal);
  }
}

/** The plan: checks everything, takes the locks, measures, and writes the journal; changes no disk. */
async function plan(childPath: string, options: MergeOptions, locks: OperationLocks, claimJournal: (path: string) => void): Promise<{ journalPath: string; journal: MergeJournal; forecast: GrowthForecast & { freeBytes: number } }> {
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
    claimJournal(journalPath);

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
    const handed = dependents.filter((d) => d.dependsOn === 0);
    const changed = [target.path, ...merged.map((l) => l.path), ...handed.map((d) => d.path)];
    await refuseIfPending([...changed, ...chain.layers.slice(k + 1).map((l) => l.path)]);
    // Held from here to the end: nobody writes these files, nor merges the target's parents away.
    await locks.take(changed, 'write');
    await locks.take(chain.layers.slice(k + 1).map((l) => l.path), 'read');

    const upper = new DiskChain(merged, chain.links.slice(0, k - 1));
    const growth = await forecastGrowth(upper, target, options.signal);
    const freeBytes = await ensureSpace(target.path, growth.bytesNeeded, `merging ${childPath} into ${target.path}`);
    // What the journal records of the layers must survive a power cut as recorded: their writer may
    // have left their times (a VHD's fingerprint) or even data to the file system's next commit, and a
    // layer turned back to an older state would then refuse the resume (merge-identity.ts).
    for (const l of merged) await syncFile(l.path);
    const journal: MergeJournal = {
      operation: 'merge',
      version: 2,
      target: { path: resolve(target.path), realPath: reals[k]!, identityBefore: target.identity(), ...(target.format === 'vhdx' ? { sessionDataWriteGuid: randomGuid() } : {}) },
      layers: await Promise.all(merged.map(async (l, i) => ({ path: resolve(l.path), realPath: reals[i]!, identity: l.identity(), fingerprint: await fingerprint(l) }))),
      dependents: await Promise.all(handed.map((d) => dependentRecord(d.path, d.realPath))),
      phase: 'copy',
      copiedUpTo: 0,
      keep: options.keep ?? false,
      ...(options.verify ? { hashBefore: await hashChain(chain, { ...(options.signal ? { signal: options.signal } : {}) }) } : {}),
    };
    await writeRefs(journalPath, journal);
    await writeJournal(journalPath, journal);
    return { journalPath, journal, forecast: { ...growth, freeBytes } };
  } finally {
    await chain.close();
  }
}

async function dependentRecord(path: string, realPath: string): Promise<JournalDependent> {
  const disk = await openDisk(path);
  try {
    return { path: resolve(path), realPath, diskId: diskIdOf(disk) };
  } finally {
    await disk.close();
  }
}

interface Run extends Checker {
  options: MergeOptions;
  bytesCopied: number;
  removed: string[];
}

type Step = (r: Run) => Promise<MergePhase | 'done'>;

const STEPS: Record<MergePhase, Step> = { copy: copyStep, verify: verifyStep, handover: handoverStep, remove: removeStep };

/** Runs the phases from the journal's on; each transition is written to the journal before the next phase starts. */
async function run(journalPath: string, journal: MergeJournal, options: MergeOptions, resumed: boolean): Promise<MergeResult> {
  const r: Run = { journalPath, journal, options, bytesCopied: 0, removed: [] };
  if (resumed) await preflight(r);
  for (;;) {
    options.onPhase?.(journal.phase);
    const next = await STEPS[journal.phase](r);
    if (next === 'done') break;
    journal.phase = next;
    await writeJournal(journalPath, journal);
  }
  const { hashBefore, hashAfter } = journal;
  return {
    target: journal.target.path,
    merged: journal.layers.map((l) => l.path),
    removed: r.removed,
    handedOver: journal.dependents.map(dependentPath),
    bytesCopied: r.bytesCopied,
    resumed,
    ...(hashBefore && hashAfter ? { verify: { before: hashBefore, after: hashAfter, identical: hashBefore === hashAfter } } : {}),
  };
}

const CHAIN_CHANGED = new Set(['PARENT_NOT_FOUND', 'PARENT_MISMATCH', 'CHAIN_CYCLE', 'PATH_NOT_ALLOWED', 'UNKNOWN_FORMAT', 'CORRUPT', 'TRUNCATED', 'UNSUPPORTED', 'IO']);

/**
 * A resume first checks every file the journal names, whatever the phase touches next, so that a
 * replaced or changed file stops it before anything at all is done.
 */
async function preflight(r: Run): Promise<void> {
  const { journal, journalPath } = r;
  const removing = journal.phase === 'remove';
  for (const layer of journal.layers) {
    if (!(await checkLayer(r, layer)) && !removing) throw journalRefused(journalPath, journal, `${layer.path}, a merged layer, is missing`);
  }
  await checkTarget(r);
  for (const dependent of journal.dependents) {
    const path = dependentPath(dependent);
    if (!(await stat(path).catch(() => undefined))) throw journalRefused(journalPath, journal, `${path}, a child to hand over to the target, is missing`);
    const disk = await openDisk(path);
    try {
      const pointsAt = await checkDependent(r, dependent, disk);
      if (removing && pointsAt !== 'target') throw journalRefused(journalPath, journal, `${path} should name the target as its parent by now, and does not`);
    } finally {
      await disk.close();
    }
  }
}

/** copy: opens the chain the journal names, checks every file, and copies from where the journal says. */
async function copyStep(r: Run): Promise<MergePhase> {
  const { journal, journalPath, options } = r;
  const k = journal.layers.length;
  const childPath = journal.layers[0]!.path;
  const sessionGuid = journal.target.sessionDataWriteGuid;
  const chain = await openChain(childPath, { ...(options.searchPaths ? { searchPaths: options.searchPaths } : {}) }).catch((e: unknown) => {
    // A child, layer or target replaced or gone shows first as a chain that no longer opens.
    if (isDiskchainError(e) && CHAIN_CHANGED.has(e.code)) throw journalRefused(journalPath, journal, `the chain from ${childPath} no longer opens as recorded (${e.code}: ${e.message})`);
    throw e;
  });
  let upper: DiskChain | undefined;
  try {
    if (chain.layers.length <= k) throw journalRefused(journalPath, journal, `${childPath} no longer has the chain the journal recorded`);
    for (let i = 0; i < k; i++) await checkLayer(r, journal.layers[i]!, chain.layers[i]!);
    await checkTarget(r, chain.layers[k]!);
    // The target's child learns the DataWriteGuid the target will carry (parent_linkage2) before the
    // target changes, so the chain stays linked at every instant (MS-VHDX §2.6.2.6). The primary link
    // is the target's identity when the merge was planned (after an abandoned merge, the child may
    // have matched it through parent_linkage2 only).
    const lowest = chain.layers[k - 1]!;
    if (sessionGuid && lowest.parent?.alternateDataWriteGuid !== sessionGuid) {
      await chain.close();
      const lowestPath = journal.layers[k - 1]!.path;
      // Bookkeeping, not new content: the file keeps its modification time, so a kept layer (--keep)
      // does not pass for the newest state of the VM in a later scan.
      const times = await stat(lowestPath);
      const disk = await openDisk(lowestPath, { writable: true, mergeJournal: journalPath });
      try {
        if (!disk.setParent || !disk.parent) throw new DiskchainError('UNSUPPORTED', `cannot record the merge in ${disk.path}`, { file: disk.path });
        await disk.setParent(linkTo(disk.path, journal.target.path, journal.target.identityBefore, sessionGuid));
      } finally {
        await disk.close();
      }
      await utimes(lowestPath, times.atime, times.mtime);
      return await copyStep(r);
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
    mergeJournal: journalPath,
    ...(sessionGuid ? { dataWriteGuid: sessionGuid } : {}),
    ...(options.wrapTargetSource ? { wrapSource: options.wrapTargetSource } : {}),
  });
  try {
    r.bytesCopied = await copyUpperInto(upper, target, journal.copiedUpTo, options, options.checkpointBytes, async (upTo) => {
      await target.flush();
      journal.copiedUpTo = upTo;
      await writeJournal(journalPath, journal);
    });
  } finally {
    await target.close().catch(() => undefined);
    for (const l of upper.layers) await l.close().catch(() => undefined);
  }
  // What the target is once the copy is durable: the later phases check it against this.
  const done = await openDisk(journal.target.path);
  try {
    if (!targetAcceptedInCopy(journal, done.identity())) throw journalRefused(journalPath, journal, `the target ${journal.target.path} changed identity during the copy`);
    journal.target.identityAfter = done.identity();
    journal.target.fingerprintAfter = await fingerprint(done, { withTime: false });
  } finally {
    await done.close();
  }
  return journal.hashBefore ? 'verify' : 'handover';
}

/** verify: the target's chain must read as the child did, before anything is handed over or removed. */
async function verifyStep(r: Run): Promise<MergePhase> {
  const { journal, journalPath, options } = r;
  await checkTarget(r);
  const after = await openChain(journal.target.path, options.searchPaths ? { searchPaths: options.searchPaths } : {});
  try {
    journal.hashAfter = await hashChain(after, { ...(options.signal ? { signal: options.signal } : {}) });
  } finally {
    await after.close();
  }
  if (journal.hashAfter !== journal.hashBefore) {
    await writeJournal(journalPath, journal);
    throw new DiskchainError(
      'VERIFY_MISMATCH',
      `--verify: ${journal.target.path} does not read as ${journal.layers[0]!.path} did (sha256 before ${journal.hashBefore}, after ${journal.hashAfter}); stopped before anything was handed over or removed: every file is in place and the merged child reads as before. 'diskchain merge --abandon ${journal.layers[0]!.path}' ends the merge`,
      { file: journal.target.path, before: journal.hashBefore, after: journal.hashAfter },
    );
  }
  return 'handover';
}

/** handover: each child of the merged child is re-pointed at the target, once checked to be the one recorded. */
async function handoverStep(r: Run): Promise<MergePhase> {
  const { journal, journalPath } = r;
  await checkTarget(r);
  const identity = journal.target.identityAfter ?? (await targetIdentity(journal.target.path));
  for (const dependent of journal.dependents) {
    const path = dependentPath(dependent);
    if (!(await stat(path).catch(() => undefined))) throw journalRefused(journalPath, journal, `${path}, a child to hand over to the target, is missing`);
    const handOver = async (disk: VirtualDisk): Promise<void> => {
      if ((await checkDependent(r, dependent, disk)) === 'target') return;
      if (!disk.setParent) throw new DiskchainError('UNSUPPORTED', `cannot re-point ${path}`, { file: path });
      await disk.setParent(linkTo(path, journal.target.path, identity));
    };
    if (await r.options.withOpenDependent?.(path, handOver)) continue;
    const disk = await openDisk(path, { writable: true, mergeJournal: journalPath });
    try {
      await handOver(disk);
    } finally {
      await disk.close();
    }
  }
  return 'remove';
}

/** A version 1 journal has no identity after the copy: the target's own, once checked. */
async function targetIdentity(path: string): Promise<MergeJournal['target']['identityBefore']> {
  const disk = await openDisk(path);
  try {
    return disk.identity();
  } finally {
    await disk.close();
  }
}

/** remove: deletes each merged layer that is still the one recorded (unless --keep), then the journal. */
async function removeStep(r: Run): Promise<'done'> {
  const { journal, journalPath } = r;
  await checkTarget(r);
  if (!journal.keep) {
    for (const layer of journal.layers) {
      if (!(await checkLayer(r, layer))) continue; // deleted before an interruption
      await removeFile(layer.path);
      r.removed.push(layer.path);
    }
    for (const folder of new Set(journal.layers.map((l) => dirname(l.path)))) await syncFolder(folder);
  }
  await removeJournalAndRefs(journalPath, journal);
  return 'done';
}
