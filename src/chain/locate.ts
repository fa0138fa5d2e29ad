import { readdir, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, parse, posix, relative, resolve, sep, win32 } from 'node:path';
import { DiskchainError } from '../io/errors.js';
import type { ParentLocatorEntry, ParentReference } from '../formats/types.js';

export type AttemptResult =
  | 'found'
  | 'missing'
  | 'not a file'
  | 'outside the allowed folders'
  | 'identity mismatch'
  | 'other format'
  | 'unreadable';

export interface LocateAttempt {
  /** The locator entry (relative_path, W2ku, ...) or `search` for the identity search. */
  key: string;
  stored: string;
  tried: string;
  result: AttemptResult;
  /** Why, when the result is not `found` (e.g. the identity the file carries). */
  detail?: string;
}

/** Directory entries read per folder while matching names case-insensitively. */
const MAX_DIR_ENTRIES = 100_000;

/**
 * Where a child's parent may be, by path only: its locator entries in the spec's order
 * (relative, then volume, then absolute), each mapped onto this machine, each with a
 * case-insensitive fallback (Windows names ignore case). Identity checks and the search by
 * identity are in resolve-parent.ts.
 */
export async function parentPathCandidates(childPath: string, parent: ParentReference): Promise<Array<{ entry: ParentLocatorEntry; path: string }>> {
  const out: Array<{ entry: ParentLocatorEntry; path: string }> = [];
  const seen = new Set<string>();
  for (const entry of orderLocators(parent.locators)) {
    for (const candidate of candidatesFor(childPath, entry)) {
      let path = candidate;
      if ((await fileState(candidate)) === 'missing') path = (await matchIgnoringCase(candidate)) ?? candidate;
      if (seen.has(path)) continue;
      seen.add(path);
      out.push({ entry, path });
    }
  }
  return out;
}

/** The first candidate path that exists (no identity check); PARENT_NOT_FOUND lists every path tried. */
export async function locateParent(childPath: string, parent: ParentReference): Promise<{ path: string; attempts: LocateAttempt[] }> {
  const attempts: LocateAttempt[] = [];
  for (const { entry, path } of await parentPathCandidates(childPath, parent)) {
    const result = await fileState(path);
    attempts.push({ key: entry.key, stored: entry.path, tried: path, result });
    if (result === 'found') return { path, attempts };
  }
  throw new DiskchainError('PARENT_NOT_FOUND', `parent of ${childPath} not found; tried ${describeAttempts(attempts)}`, { file: childPath, attempts });
}

export function describeAttempts(attempts: LocateAttempt[]): string {
  if (attempts.length === 0) return 'nothing (no locator entries)';
  return attempts.map((a) => `${a.key}: ${a.tried} (${a.result}${a.detail ? `: ${a.detail}` : ''})`).join('; ');
}

const ORDER: Record<ParentLocatorEntry['kind'], number> = { relative: 0, volume: 1, absolute: 2 };

function orderLocators(entries: ParentLocatorEntry[]): ParentLocatorEntry[] {
  return [...entries].sort((a, b) => ORDER[a.kind] - ORDER[b.kind]);
}

/** Paths on this machine that a stored Windows or POSIX path may mean. */
function candidatesFor(childPath: string, entry: ParentLocatorEntry): string[] {
  const childDir = dirname(resolve(childPath));
  const stored = entry.path;
  if (entry.kind === 'relative') {
    const rel = stored.replace(/\\/g, '/').replace(/^\.\//, '');
    return [resolve(childDir, rel)];
  }
  if (entry.kind === 'absolute' && isAbsolute(stored) && !stored.includes('\\')) return [stored];
  // A Windows path (C:\dir\f.vhdx, \\?\C:\..., \\?\Volume{..}\...): no drive letters here, so
  // the file name beside the child is the natural fallback, then the path without its drive.
  const windowsPath = stored.replace(/^\\\\\?\\/, '');
  const name = win32.basename(windowsPath);
  const out = [resolve(childDir, name)];
  const withoutDrive = windowsPath.replace(/^[A-Za-z]:/, '').replace(/\\/g, '/');
  if (posix.isAbsolute(withoutDrive) && !/^Volume\{/i.test(windowsPath)) out.push(withoutDrive);
  return [...new Set(out)];
}

/** The existing path that equals `path` ignoring case, component by component; undefined when none or ambiguous. */
async function matchIgnoringCase(path: string): Promise<string | undefined> {
  const abs = resolve(path);
  const { root } = parse(abs);
  let current = root;
  for (const part of abs.slice(root.length).split(sep).filter(Boolean)) {
    const exact = join(current, part);
    if ((await fileState(exact)) !== 'missing') {
      current = exact;
      continue;
    }
    let names: string[];
    try {
      names = await readdir(current);
    } catch {
      return undefined;
    }
    if (names.length > MAX_DIR_ENTRIES) return undefined;
    const hits = names.filter((n) => n.toLowerCase() === part.toLowerCase());
    if (hits.length !== 1) return undefined;
    current = join(current, hits[0]!);
  }
  return current;
}

/** Is the resolved path `real` one of `roots` or below one (both already free of symlinks)? */
export function isInside(real: string, roots: string[]): boolean {
  return roots.some((root) => {
    const rel = relative(root, real);
    return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
  });
}

async function fileState(path: string): Promise<'found' | 'missing' | 'not a file'> {
  try {
    return (await stat(path)).isFile() ? 'found' : 'not a file';
  } catch {
    return 'missing';
  }
}
