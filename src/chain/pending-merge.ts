import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { DiskchainError } from '../io/errors.js';

/**
 * Pending merges as the rest of diskchain sees them (docs/locking.md, "Pending merges").
 *
 * A merge journal `<target>.diskchain-merge.json` lies beside the merge's target. Each file the merge
 * reserves in another folder (a merged layer, a child handed over) carries a pointer
 * `<file>.diskchain-merge-ref.json` naming the journal, so that the reservation is found from the file
 * itself. Pointers are written before the journal and removed after it: a pointer whose journal is
 * gone, or does not name its file, reserves nothing.
 */
export const MERGE_JOURNAL_SUFFIX = '.diskchain-merge.json';
export const MERGE_REF_SUFFIX = '.diskchain-merge-ref.json';
const MAX_RECORD_BYTES = 1024 * 1024;
const MAX_JOURNALS_LOOKED_AT = 1000;

export interface PendingMerge {
  /** The journal's path. */
  journal: string;
  /** The merged child (the merge's first layer), as the journal records it. */
  child: string;
  target: string;
  phase: string;
  /** How the file asked about takes part: the target, a merged layer, or a child handed over. */
  role: 'target' | 'layer' | 'dependent';
}

/** The commands that end a pending merge, for messages. */
export function pendingMergeAdvice(p: PendingMerge): string {
  return `a merge of ${p.child} into ${p.target} is pending (phase ${p.phase}, journal ${p.journal}); run 'diskchain merge ${p.child}' to finish it, or 'diskchain merge --abandon ${p.child}' to roll back what can be rolled back`;
}

/** Reads a small JSON record; undefined when missing or not one of ours (never throws). */
async function readRecord(path: string): Promise<Record<string, unknown> | undefined> {
  try {
    if ((await stat(path)).size > MAX_RECORD_BYTES) return undefined;
    const value: unknown = JSON.parse(await readFile(path, 'utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

/** How the journal names `real` (the file's real path), if it does. */
function roleIn(journal: Record<string, unknown>, real: string, resolved: string): PendingMerge['role'] | undefined {
  const names = (x: unknown): boolean => {
    if (typeof x === 'string') return x === real || x === resolved;
    if (typeof x !== 'object' || x === null) return false;
    const o = x as Record<string, unknown>;
    return o.realPath === real || o.path === real || o.path === resolved;
  };
  if (names(journal.target)) return 'target';
  if (Array.isArray(journal.layers) && journal.layers.some(names)) return 'layer';
  if (Array.isArray(journal.dependents) && journal.dependents.some(names)) return 'dependent';
  return undefined;
}

function describe(journalPath: string, journal: Record<string, unknown>, role: PendingMerge['role']): PendingMerge {
  const first = Array.isArray(journal.layers) ? (journal.layers[0] as Record<string, unknown> | undefined) : undefined;
  const target = journal.target as Record<string, unknown> | undefined;
  return { journal: journalPath, child: str(first?.path) ?? '?', target: str(target?.path) ?? '?', phase: str(journal.phase) ?? '?', role };
}

/** The journal files in `folder` (bounded). */
export async function mergeJournalsIn(folder: string): Promise<string[]> {
  try {
    return (await readdir(folder))
      .filter((n) => n.endsWith(MERGE_JOURNAL_SUFFIX))
      .slice(0, MAX_JOURNALS_LOOKED_AT)
      .map((n) => join(folder, n));
  } catch {
    return [];
  }
}

/**
 * The pending merge that names `path` (as target, merged layer or child handed over), if any: a
 * journal beside it, the journal a pointer beside it names, or any journal in its folder.
 */
export async function pendingMergeFor(path: string): Promise<PendingMerge | undefined> {
  const resolved = resolve(path);
  const real = await realpath(resolved).catch(() => resolved);
  const candidates = new Set<string>();
  for (const p of new Set([resolved, real])) {
    candidates.add(`${p}${MERGE_JOURNAL_SUFFIX}`);
    const ref = await readRecord(`${p}${MERGE_REF_SUFFIX}`);
    if (ref && typeof ref.journal === 'string') candidates.add(ref.journal);
  }
  for (const folder of new Set([dirname(resolved), dirname(real)])) for (const j of await mergeJournalsIn(folder)) candidates.add(j);
  for (const journalPath of candidates) {
    const journal = await readRecord(journalPath);
    if (!journal || journal.operation !== 'merge') continue;
    const role = roleIn(journal, real, resolved);
    if (role) return describe(journalPath, journal, role);
  }
  return undefined;
}

/** The pending merges whose journals lie in `folders`, each with what to run. */
export async function pendingMergesIn(folders: Iterable<string>): Promise<Array<PendingMerge & { advice: string }>> {
  const out: Array<PendingMerge & { advice: string }> = [];
  for (const folder of new Set(folders)) {
    for (const journalPath of await mergeJournalsIn(folder)) {
      const journal = await readRecord(journalPath);
      if (!journal || journal.operation !== 'merge') continue;
      const p = describe(journalPath, journal, 'target');
      out.push({ ...p, advice: pendingMergeAdvice(p) });
    }
  }
  return out;
}

/** Refuses (LOCKED) a writable open of a file a pending merge reserves, unless `owner` is that merge's journal. */
export async function refuseIfReservedByMerge(path: string, owner?: string): Promise<void> {
  const pending = await pendingMergeFor(path);
  if (!pending || (owner !== undefined && resolve(owner) === resolve(pending.journal))) return;
  throw new DiskchainError('LOCKED', `cannot write ${basename(path)}: ${pendingMergeAdvice(pending)}`, { file: path, heldBy: 'merge', pendingMerge: pending });
}
