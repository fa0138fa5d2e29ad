import { stat } from 'node:fs/promises';
import { DiskchainError } from '../io/errors.js';

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/**
 * `.option(...SEARCH_PATH_OPTION)`: folders where parents may live, and where they are searched for by
 * identity when stored paths are stale. A parent found there is remembered (see docs/chains.md), so later
 * commands find it without the option.
 */
export const SEARCH_PATH_OPTION = [
  '--search-path <dir>',
  'a folder where parents may live (repeatable); when a stored parent path is stale, its files and those up to 4 folder levels below (20000 files at most) are searched by identity. A parent found through it is remembered for later commands',
  collect,
] as const;

/** `.option(...IGNORE_ID_OPTION)`: read through a parent whose identity does not match. */
export const IGNORE_ID_OPTION = ['--ignore-id-mismatch', 'read through a parent whose identity differs from what the child recorded (nothing is rewritten)'] as const;

/** The search folders of a parsed --search-path, each checked to be an existing folder (a typo must not pass silently). */
export async function parentSearch(opts: { searchPath?: string[] }): Promise<{ searchPaths?: string[] }> {
  if (!opts.searchPath) return {};
  for (const folder of opts.searchPath) {
    const s = await stat(folder).catch(() => undefined);
    if (!s) throw new DiskchainError('INVALID_ARGUMENT', `--search-path ${folder} does not exist`, { file: folder });
    if (!s.isDirectory()) throw new DiskchainError('INVALID_ARGUMENT', `--search-path ${folder} is not a folder`, { file: folder });
  }
  return { searchPaths: opts.searchPath };
}

/** The openChain options for a parsed --search-path (checked) and --ignore-id-mismatch where the command has it. */
export async function searchPathOptions(opts: { searchPath?: string[]; ignoreIdMismatch?: boolean }): Promise<{ searchPaths?: string[]; ignoreIdMismatch?: boolean }> {
  return { ...(await parentSearch(opts)), ...(opts.ignoreIdMismatch ? { ignoreIdMismatch: true } : {}) };
}
