import { realpath } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { DiskchainError } from '../io/errors.js';
import { removeFile, writeFileAtomic } from '../io/durable.js';
import type { LinkIdentity } from '../formats/types.js';
import { MERGE_JOURNAL_SUFFIX, MERGE_REF_SUFFIX, mergeJournalsIn, pendingMergeAdvice, pendingMergeFor, type PendingMerge } from '../chain/pending-merge.js';
import { readJournal, removeJournal, syncFolder, writeJournal } from './journal.js';
import type { Fingerprint } from './merge-identity.js';

/** The phases of a merge, in order (see merge.ts). */
export type MergePhase = 'copy' | 'verify' | 'handover' | 'remove';
export const MERGE_PHASES: readonly MergePhase[] = ['copy', 'verify', 'handover', 'remove'];

export interface JournalLayer {
  path: string;
  realPath: string;
  identity: LinkIdentity;
  /** What a write into the layer changes (merge-identity.ts); absent in version 1 journals. */
  fingerprint?: Fingerprint;
}

export interface JournalDependent {
  path: string;
  realPath: string;
  /** The disk's own id (VHDX VirtualDiskId, VHD unique id): stays the same when its parent link is rewritten. */
  diskId: string;
}

/** What a merge records beside its target before changing anything, and as it goes. */
export interface MergeJournal {
  operation: 'merge';
  version: 1 | 2;
  target: {
    path: string;
    realPath: string;
    identityBefore: LinkIdentity;
    sessionDataWriteGuid?: string;
    /** Recorded when the copy is complete: what the target must still be in the later phases. */
    identityAfter?: LinkIdentity;
    fingerprintAfter?: Fingerprint;
  };
  /** The layers merged into the target, the child first. */
  layers: JournalLayer[];
  /** Disks whose parent is the merged child: re-pointed at the target once it holds the data (version 1: paths). */
  dependents: Array<JournalDependent | string>;
  phase: MergePhase;
  /** Every range below this virtual offset is durable in the target. */
  copiedUpTo: number;
  keep: boolean;
  hashBefore?: string;
  hashAfter?: string;
  /** Pointers written beside reserved files in other folders (pending-merge.ts). */
  refs?: string[];
}

export function journalPathFor(targetPath: string): string {
  return `${resolve(targetPath)}${MERGE_JOURNAL_SUFFIX}`;
}

export const dependentPath = (d: JournalDependent | string): string => (typeof d === 'string' ? d : d.path);

/** Every file the journal reserves: the target, the layers, the dependents. */
export function reservedFiles(journal: MergeJournal): string[] {
  return [journal.target.path, ...journal.layers.map((l) => l.path), ...journal.dependents.map(dependentPath)];
}

/**
 * The pointers a journal at `journalPath` needs: one beside each reserved file outside the journal's
 * folder. Written (durably) before the journal, so the reservation is found from the file itself.
 */
export async function writeRefs(journalPath: string, journal: MergeJournal): Promise<void> {
  const folder = dirname(journalPath);
  const refs = [...new Set(reservedFiles(journal).filter((p) => dirname(p) !== folder).map((p) => `${p}${MERGE_REF_SUFFIX}`))];
  for (const ref of refs) await writeFileAtomicRef(ref, journalPath);
  journal.refs = refs;
}

async function writeFileAtomicRef(ref: string, journalPath: string): Promise<void> {
  await writeFileAtomic(ref, `${JSON.stringify({ operation: 'merge-ref', journal: journalPath })}\n`);
}

/** Removes the journal, then its pointers (a pointer whose journal is gone reserves nothing). */
export async function removeJournalAndRefs(journalPath: string, journal: MergeJournal): Promise<void> {
  await removeJournal(journalPath);
  for (const ref of journal.refs ?? []) await removeFile(ref);
  for (const folder of new Set((journal.refs ?? []).map((r) => dirname(r)))) await syncFolder(folder);
}

export { writeJournal };

export interface FoundJournal {
  path: string;
  journal: MergeJournal;
}

/**
 * The pending merge whose merged child is `childPath`: a journal in the child's folder or in the
 * folders of `alsoIn`, or the journal the pointer beside the child names.
 */
export async function findJournalFor(childPath: string, alsoIn: string[] = []): Promise<FoundJournal | undefined> {
  const child = resolve(childPath);
  const childReal = await realpath(child).catch(() => undefined);
  const candidates: string[] = [];
  const ref = await readJournal(`${child}${MERGE_REF_SUFFIX}`).catch(() => undefined);
  if (ref && typeof ref.journal === 'string') candidates.push(ref.journal);
  for (const folder of new Set([dirname(child), ...alsoIn.map((p) => dirname(resolve(p)))])) candidates.push(...(await mergeJournalsIn(folder)));
  for (const path of new Set(candidates)) {
    const record = await readJournal(path);
    if (!record) continue;
    const journal = asMergeJournal(record, path);
    const first = journal.layers[0]!;
    if (first.path === child || (childReal !== undefined && first.realPath === childReal)) return { path, journal };
  }
  return undefined;
}

/** Reads and checks the journal a pending merge names. */
export async function loadJournal(pending: PendingMerge): Promise<FoundJournal> {
  const record = await readJournal(pending.journal);
  if (!record) throw new DiskchainError('JOURNAL_MISMATCH', `the merge journal ${pending.journal} is gone`, { file: pending.journal });
  return { path: pending.journal, journal: asMergeJournal(record, pending.journal) };
}

/** Refuses (LOCKED) when a pending merge other than `own` reserves one of `paths`, saying what to run. */
export async function refuseIfPending(paths: readonly string[], own?: string): Promise<void> {
  for (const path of paths) {
    const pending = await pendingMergeFor(path);
    if (pending && (own === undefined || resolve(own) !== resolve(pending.journal))) {
      throw new DiskchainError('LOCKED', `${path} is part of another merge: ${pendingMergeAdvice(pending)}`, { file: path, heldBy: 'merge', pendingMerge: pending });
    }
  }
}

/** Checks the shape of a journal read from disk (it is input like any other file). */
function asMergeJournal(record: Record<string, unknown>, path: string): MergeJournal {
  const bad = (what: string): never => {
    throw new DiskchainError('JOURNAL_MISMATCH', `not a merge journal diskchain understands: ${what}; inspect it, and remove it only if no merge is half done`, { file: path });
  };
  if (record.operation !== 'merge' || (record.version !== 1 && record.version !== 2)) bad('operation or version');
  const j = record as unknown as MergeJournal;
  if (!j.target || typeof j.target.path !== 'string' || typeof j.target.realPath !== 'string' || !j.target.identityBefore) bad('target');
  if (!Array.isArray(j.layers) || j.layers.length === 0 || j.layers.some((l) => typeof l?.path !== 'string' || typeof l.realPath !== 'string' || !l.identity)) bad('layers');
  if (!Array.isArray(j.dependents) || j.dependents.some((d) => typeof d !== 'string' && (typeof d?.path !== 'string' || typeof d.realPath !== 'string' || typeof d.diskId !== 'string'))) bad('dependents');
  if (!MERGE_PHASES.includes(j.phase)) bad('phase');
  if (!Number.isSafeInteger(j.copiedUpTo) || j.copiedUpTo < 0) bad('copiedUpTo');
  if (j.refs !== undefined && (!Array.isArray(j.refs) || j.refs.some((r) => typeof r !== 'string' || !r.endsWith(MERGE_REF_SUFFIX)))) bad('refs');
  return j;
}
