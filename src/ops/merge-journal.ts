import { readdir, realpath } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { DiskchainError } from '../io/errors.js';
import type { LinkIdentity } from '../formats/types.js';
import { readJournal } from './journal.js';

const MERGE_JOURNAL_SUFFIX = '.diskchain-merge.json';
const MAX_JOURNALS_LOOKED_AT = 1000;

/** What a merge records beside its target before changing anything, and as it goes. */
export interface MergeJournal {
  operation: 'merge';
  version: 1;
  target: { path: string; realPath: string; identityBefore: LinkIdentity; sessionDataWriteGuid?: string };
  /** The layers merged into the target, the child first. */
  layers: Array<{ path: string; realPath: string; identity: LinkIdentity }>;
  /** Disks whose parent is the merged child: re-pointed at the target once it holds the data. */
  dependents: string[];
  phase: 'copy' | 'handover' | 'remove';
  /** Every range below this virtual offset is durable in the target. */
  copiedUpTo: number;
  keep: boolean;
  hashBefore?: string;
}

export function journalPathFor(targetPath: string): string {
  return `${resolve(targetPath)}${MERGE_JOURNAL_SUFFIX}`;
}

/** A merge journal in the child's (or the ancestor's) folder whose merged child is `childPath`. */
export async function findJournalFor(childPath: string, alsoIn: string[] = []): Promise<{ path: string; journal: MergeJournal } | undefined> {
  const child = resolve(childPath);
  const childReal = await realpath(child).catch(() => undefined);
  for (const folder of new Set([dirname(child), ...alsoIn.map((p) => dirname(resolve(p)))])) {
    let names: string[];
    try {
      names = (await readdir(folder)).filter((n) => n.endsWith(MERGE_JOURNAL_SUFFIX)).slice(0, MAX_JOURNALS_LOOKED_AT);
    } catch {
      continue;
    }
    for (const name of names) {
      const path = join(folder, name);
      const record = await readJournal(path);
      if (!record) continue;
      const journal = asMergeJournal(record, path);
      const first = journal.layers[0]!;
      if (first.path === child || (childReal !== undefined && first.realPath === childReal)) return { path, journal };
    }
  }
  return undefined;
}

/** Checks the shape of a journal read from disk (it is input like any other file). */
function asMergeJournal(record: Record<string, unknown>, path: string): MergeJournal {
  const bad = (what: string): never => {
    throw new DiskchainError('JOURNAL_MISMATCH', `not a merge journal diskchain understands: ${what}`, { file: path });
  };
  if (record.operation !== 'merge' || record.version !== 1) bad('operation or version');
  const j = record as unknown as MergeJournal;
  if (!j.target || typeof j.target.path !== 'string' || typeof j.target.realPath !== 'string') bad('target');
  if (!Array.isArray(j.layers) || j.layers.length === 0 || j.layers.some((l) => typeof l?.path !== 'string' || typeof l.realPath !== 'string' || !l.identity)) bad('layers');
  if (!Array.isArray(j.dependents) || j.dependents.some((d) => typeof d !== 'string')) bad('dependents');
  if (!['copy', 'handover', 'remove'].includes(j.phase)) bad('phase');
  if (!Number.isSafeInteger(j.copiedUpTo) || j.copiedUpTo < 0) bad('copiedUpTo');
  return j;
}
