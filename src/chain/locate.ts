import { stat } from 'node:fs/promises';
import { dirname, isAbsolute, posix, resolve, win32 } from 'node:path';
import { DiskchainError } from '../io/errors.js';
import type { ParentLocatorEntry, ParentReference } from '../formats/types.js';

export interface LocateAttempt {
  key: string;
  stored: string;
  tried: string;
  result: 'found' | 'missing' | 'not a file';
}

/**
 * Where a child's parent is: its locator entries in the format's order (relative first),
 * each stored path mapped onto this machine. The full search (by identity) belongs to `scan`.
 */
export async function locateParent(childPath: string, parent: ParentReference): Promise<{ path: string; attempts: LocateAttempt[] }> {
  const attempts: LocateAttempt[] = [];
  const tried = new Set<string>();
  for (const entry of orderLocators(parent.locators)) {
    for (const candidate of candidatesFor(childPath, entry)) {
      if (tried.has(candidate)) continue;
      tried.add(candidate);
      const result = await fileState(candidate);
      attempts.push({ key: entry.key, stored: entry.path, tried: candidate, result });
      if (result === 'found') return { path: candidate, attempts };
    }
  }
  const list = attempts.map((a) => `${a.key}: ${a.tried} (${a.result})`).join('; ');
  throw new DiskchainError('PARENT_NOT_FOUND', `parent of ${childPath} not found; tried ${list || 'nothing (no locator entries)'}`, { file: childPath, attempts });
}

const ORDER: Record<ParentLocatorEntry['kind'], number> = { relative: 0, volume: 1, absolute: 2 };

function orderLocators(entries: ParentLocatorEntry[]): ParentLocatorEntry[] {
  return [...entries].sort((a, b) => ORDER[a.kind] - ORDER[b.kind]);
}

/** Paths on this machine that a stored Windows or POSIX path may mean. */
export function candidatesFor(childPath: string, entry: ParentLocatorEntry): string[] {
  const childDir = dirname(childPath);
  const stored = entry.path;
  if (entry.kind === 'relative') {
    const rel = stored.replace(/\\/g, '/').replace(/^\.\//, '');
    return [resolve(childDir, rel)];
  }
  if (entry.kind === 'absolute' && isAbsolute(stored) && !stored.includes('\\')) return [stored];
  // A Windows path (C:\dir\f.vhdx, \\?\C:\..., \\?\Volume{..}\...): no drive letters here, so
  // the file name beside the child is the natural fallback.
  const windowsPath = stored.replace(/^\\\\\?\\/, '');
  const name = win32.basename(windowsPath);
  const out = [resolve(childDir, name)];
  const withoutDrive = windowsPath.replace(/^[A-Za-z]:/, '').replace(/\\/g, '/');
  if (posix.isAbsolute(withoutDrive) && !/^Volume\{/i.test(windowsPath)) out.push(withoutDrive);
  return [...new Set(out)];
}

async function fileState(path: string): Promise<LocateAttempt['result']> {
  try {
    return (await stat(path)).isFile() ? 'found' : 'not a file';
  } catch {
    return 'missing';
  }
}
