import { basename, dirname, relative, resolve } from 'node:path';
import { rememberLink } from './link-store.js';
import type { LinkIdentity, ParentLinkUpdate } from '../formats/types.js';

/** The paths a child records for its parent: relative to the child's folder (backslashes, as Windows writes it) and absolute. */
export function parentPaths(childPath: string, parentPath: string): { relativePath: string; absolutePath: string; parentFileName: string } {
  const rel = relative(dirname(resolve(childPath)), resolve(parentPath));
  const windowsRel = rel.replace(/\//g, '\\');
  return {
    relativePath: rel.startsWith('..') ? windowsRel : `.\\${windowsRel}`,
    absolutePath: resolve(parentPath),
    parentFileName: basename(parentPath),
  };
}

/**
 * A complete parent link from `childPath` to the disk at `parentPath` carrying `identity`. A link across
 * folders is remembered (link-store.ts): diskchain made it, so later commands follow it.
 */
export function linkTo(childPath: string, parentPath: string, identity: LinkIdentity, alternateDataWriteGuid?: string): ParentLinkUpdate {
  const { relativePath, absolutePath } = parentPaths(childPath, parentPath);
  rememberLink(childPath, parentPath, 'link');
  return { identity, relativePath, absolutePath, ...(alternateDataWriteGuid ? { alternateDataWriteGuid } : {}) };
}
