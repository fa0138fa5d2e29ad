import { stat } from 'node:fs/promises';
import { DiskchainError, isDiskchainError } from '../io/errors.js';
import { sameIdentity } from '../chain/identity.js';
import { linkTo } from '../chain/link-paths.js';
import { openChain, openDisk } from '../chain/open-chain.js';
import { checkDependent, checkLayer, checkTarget } from './merge-identity.js';
import { dependentPath, removeJournalAndRefs, reservedFiles, type FoundJournal } from './merge-journal.js';
import { claim, findPendingMerge, unclaim } from './merge.js';
import { OperationLocks } from './op-locks.js';

export interface AbandonResult {
  journal: string;
  child: string;
  target: string;
  phase: string;
  /** What was put back as it was before the merge. */
  rolledBack: string[];
  /** What could not be put back, and why. */
  notRolledBack: string[];
}

/**
 * `merge --abandon`: the documented way out of a pending merge. Rolls back what can be rolled back,
 * says what cannot, and removes the journal (then its pointers), so no file stays reserved:
 *
 *   copy, verify  nothing but the target was written. The target alone is not what it was once any
 *                 range was copied into it (that cannot be undone); the merged child still reads as
 *                 before through its layers (the lowest one accepts the target's new DataWriteGuid).
 *   handover      children already re-pointed at the target are pointed back at the merged child,
 *                 which still reads the same (both read the same content).
 *   remove        layers already deleted are gone; the merge's result stands and the rest is kept.
 *
 * Like the merge, it changes only files that pass their identity checks.
 */
export async function abandonMerge(childPath: string, options: { into?: string } = {}): Promise<AbandonResult> {
  const found = await findPendingMerge(childPath, options);
  if (!found) throw new DiskchainError('INVALID_ARGUMENT', `no merge of ${childPath} is pending: there is nothing to abandon`, { file: childPath });
  claim(found.path);
  const locks = new OperationLocks();
  try {
    const present: string[] = [];
    for (const p of reservedFiles(found.journal)) if (await stat(p).catch(() => undefined)) present.push(p);
    await locks.take(present, 'write');
    return await abandon(found);
  } finally {
    unclaim(found.path);
    await locks.release();
  }
}

async function abandon(found: FoundJournal): Promise<AbandonResult> {
  const { journal, path: journalPath } = found;
  const c = { journal, journalPath };
  const child = journal.layers[0]!;
  const result: AbandonResult = { journal: journalPath, child: child.path, target: journal.target.path, phase: journal.phase, rolledBack: [], notRolledBack: [] };
  const target = journal.target;
  if (journal.phase === 'copy' || journal.phase === 'verify') {
    const untouched = await targetUntouched(journal.target.path, journal.target.identityBefore);
    if (untouched && journal.copiedUpTo === 0) result.rolledBack.push(`${target.path}: nothing was copied into it; it is as it was`);
    else result.notRolledBack.push(`${target.path}: part or all of the merged data was copied into it, so on its own it no longer reads as it did; ${child.path} still reads as before through its layers`);
  } else if (journal.phase === 'handover') {
    await handBack(c, result);
  } else {
    const gone: string[] = [];
    for (const l of journal.layers) if (!(await stat(l.path).catch(() => undefined))) gone.push(l.path);
    const kept = journal.layers.map((l) => l.path).filter((p) => !gone.includes(p));
    result.notRolledBack.push(`the merge had finished its copy and handover: ${target.path} holds the merged content${journal.dependents.length ? ` and ${journal.dependents.map(dependentPath).join(', ')} name it as parent` : ''}`);
    if (gone.length) result.notRolledBack.push(`already deleted: ${gone.join(', ')}`);
    if (kept.length) result.rolledBack.push(`kept in place (nothing depends on them now): ${kept.join(', ')}`);
  }
  await removeJournalAndRefs(journalPath, journal);
  return result;
}

async function targetUntouched(path: string, before: FoundJournal['journal']['target']['identityBefore']): Promise<boolean> {
  try {
    const disk = await openDisk(path);
    try {
      return sameIdentity(disk.identity(), before);
    } finally {
      await disk.close();
    }
  } catch (e) {
    if (isDiskchainError(e)) return false;
    throw e;
  }
}

/** handover, abandoned: children re-pointed at the target are pointed back at the merged child. */
async function handBack(c: { journal: FoundJournal['journal']; journalPath: string }, result: AbandonResult): Promise<void> {
  const { journal, journalPath } = c;
  const child = journal.layers[0]!;
  try {
    await checkTarget(c);
    if (!(await checkLayer(c, child))) throw new Error(`${child.path} is missing`);
    // The merged child must still open as a chain (through the target) to take its children back.
    await (await openChain(child.path)).close();
  } catch (e) {
    result.notRolledBack.push(`children already re-pointed stay on ${journal.target.path}, which holds the same content (${e instanceof Error ? e.message : String(e)})`);
    return;
  }
  if (journal.dependents.length === 0) result.rolledBack.push('no child was to be handed over: nothing to put back');
  for (const dependent of journal.dependents) {
    const path = dependentPath(dependent);
    try {
      const disk = await openDisk(path, { writable: true, mergeJournal: journalPath });
      try {
        if ((await checkDependent(c, dependent, disk)) === 'child') {
          result.rolledBack.push(`${path} had not been re-pointed yet: it still names ${child.path}`);
          continue;
        }
        await disk.setParent!(linkTo(path, child.path, child.identity));
        result.rolledBack.push(`${path} names ${child.path} as its parent again`);
      } finally {
        await disk.close();
      }
    } catch (e) {
      result.notRolledBack.push(`${path} left as it is: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
}
