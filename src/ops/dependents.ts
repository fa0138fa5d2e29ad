import { dirname, resolve } from 'node:path';
import { realpath, stat } from 'node:fs/promises';
import { DiskchainError } from '../io/errors.js';
import { catalogFolders, childrenOf } from '../chain/catalog.js';
import { rememberedChildren } from '../chain/link-store.js';
import { openDisk } from '../chain/open-disk.js';
import type { LinkIdentity } from '../formats/types.js';

/** A disk (found in the folders searched) whose recorded parent is one of the disks asked about. */
export interface Dependent {
  path: string;
  realPath: string;
  /** Index into the `disks` asked about: the one it depends on. */
  dependsOn: number;
}

/**
 * Every disk in the folders of `disks` (and `extraFolders`) that records one of `disks` as its parent,
 * by identity, leaving out the files in `exclude` (real paths). Bounded by the catalog's limits.
 */
export async function findDependents(
  disks: Array<{ path: string; identities: LinkIdentity[] }>,
  exclude: Set<string>,
  extraFolders: string[] = [],
  signal?: AbortSignal,
): Promise<Dependent[]> {
  // Children remembered in other folders (link-store.ts: links diskchain made across folders) are looked at too.
  const reals = await Promise.all(disks.map((d) => realpath(d.path).catch(() => resolve(d.path))));
  const remembered = await existingFiles(await rememberedChildren(reals));
  const folders = [...new Set([...disks.map((d) => dirname(resolve(d.path))), ...extraFolders.map((f) => resolve(f)), ...remembered])];
  const catalog = await catalogFolders(folders, { maxDepth: 0, ...(signal ? { signal } : {}) });
  const out: Dependent[] = [];
  const seen = new Set<string>();
  disks.forEach((d, i) => {
    for (const identity of d.identities) {
      for (const c of childrenOf(catalog, identity)) {
        if (exclude.has(c.realPath) || seen.has(c.realPath)) continue;
        seen.add(c.realPath);
        out.push({ path: c.path, realPath: c.realPath, dependsOn: i });
      }
    }
  });
  return out;
}

async function existingFiles(paths: string[]): Promise<string[]> {
  const states = await Promise.all(paths.map((p) => stat(p).then((st) => st.isFile(), () => false)));
  return paths.filter((_, i) => states[i]);
}

/** Refuses (HAS_DEPENDENTS) to let a disk change when another disk in its folder (or a remembered child elsewhere) records it as parent. */
export async function refuseIfDependedOn(path: string): Promise<void> {
  // Files that do not open as a disk are left to the write itself to refuse.
  const disk = await openDisk(path).catch(() => undefined);
  if (!disk) return;
  const identity = disk.identity();
  await disk.close();
  const found = await findDependents([{ path, identities: [identity] }], new Set([await realpath(path)]));
  if (found.length > 0) {
    throw new DiskchainError('HAS_DEPENDENTS', `refusing to write into ${path}: ${found.map((d) => d.path).join(', ')} depend${found.length === 1 ? 's' : ''} on it and would change under ${found.length === 1 ? 'it' : 'them'} (a checkpoint's parent must not change). Write into the newest checkpoint instead, or pass --ignore-dependents`, { file: path, dependents: found.map((d) => d.path) });
  }
}
