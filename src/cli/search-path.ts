const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** `.option(...SEARCH_PATH_OPTION)`: folders searched for parents by identity when stored paths are stale; parents may live there. */
export const SEARCH_PATH_OPTION = [
  '--search-path <dir>',
  'a folder to search for parents by identity when stored paths are stale (repeatable); parents may live there',
  collect,
] as const;

/** The openChain options for a parsed --search-path. */
export function searchPathOptions(opts: { searchPath?: string[] }): { searchPaths?: string[] } {
  return opts.searchPath ? { searchPaths: opts.searchPath } : {};
}
