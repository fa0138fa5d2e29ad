const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** `.option(...SEARCH_PATH_OPTION)`: folders searched for parents by identity when stored paths are stale; parents may live there. */
export const SEARCH_PATH_OPTION = [
  '--search-path <dir>',
  'a folder to search for parents by identity when stored paths are stale (repeatable); parents may live there',
  collect,
] as const;

/** `.option(...IGNORE_ID_OPTION)`: read through a parent whose identity does not match. */
export const IGNORE_ID_OPTION = ['--ignore-id-mismatch', 'read through a parent whose identity differs from what the child recorded (nothing is rewritten)'] as const;

/** The openChain options for a parsed --search-path (and --ignore-id-mismatch where the command has it). */
export function searchPathOptions(opts: { searchPath?: string[]; ignoreIdMismatch?: boolean }): { searchPaths?: string[]; ignoreIdMismatch?: boolean } {
  return { ...(opts.searchPath ? { searchPaths: opts.searchPath } : {}), ...(opts.ignoreIdMismatch ? { ignoreIdMismatch: true } : {}) };
}
