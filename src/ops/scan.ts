import { realpath, stat } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { catalogFolders, type Catalog, type CatalogEntry, type CatalogOptions, type CatalogProblem } from '../chain/catalog.js';
import { describeIdentity, identityKey, identityMatches, linkKey } from '../chain/identity.js';
import { isInside, parentPathCandidates } from '../chain/locate.js';
import { MAX_CHAIN_DEPTH } from '../chain/open-chain.js';
import { pendingMergesIn, type PendingMerge } from '../chain/pending-merge.js';
import { DiskchainError, throwIfAborted } from '../io/errors.js';
import type { LinkIdentity, ParentLocatorEntry, ParentReference } from '../formats/types.js';
import type { LongOperationOptions } from './progress.js';

/** Options of a scan; progress counts files linked (done, total) after the folders are catalogued. */
export interface ScanOptions extends LongOperationOptions, Pick<CatalogOptions, 'maxDepth' | 'maxFiles'> {}

export interface ScanNode {
  path: string;
  format: 'vhdx' | 'vhd';
  type: string;
  virtualSize: number;
  allocatedBytes: number;
  fileSize: number;
  mtime: string;
  mtimeMs: number;
  depth: number;
  parent: string | null;
  children: string[];
  dirtyLog: boolean;
  /** A leaf that is a copy (same identity) of a disk that has children: an old state, never the newest. */
  duplicateOf?: string;
}

export interface ScanLeaf {
  path: string;
  mtime: string;
  depth: number;
  /** The newest leaf of the tree: likely the VM's most recent state. */
  newest: boolean;
  /** From this leaf to the root. */
  chain: string[];
  duplicateOf?: string;
}

export interface ScanTree {
  root: string;
  format: 'vhdx' | 'vhd';
  /** False when the root is a differencing disk whose parent is missing (or a cycle was cut). */
  complete: boolean;
  nodes: ScanNode[];
  leaves: ScanLeaf[];
  newestLeaf: string;
  /** Sum of the file sizes of the tree's disks. */
  bytes: number;
}

/** Where a locator entry led on this machine. */
export interface LocatorTarget {
  key: string;
  stored: string;
  path: string;
  state: 'parent' | 'missing' | 'not a file' | 'other disk' | 'not a disk' | 'unreadable disk' | 'outside the scanned folders';
}

export interface ScanOrphan {
  path: string;
  format: 'vhdx' | 'vhd';
  expected: LinkIdentity;
  alternateDataWriteGuid?: string;
  /** The parent paths it last knew (its locator entries), and where each led. */
  lastKnown: ParentLocatorEntry[];
  targets: LocatorTarget[];
}

export interface ScanMismatch {
  child: string;
  key: string;
  stored: string;
  /** The existing file the locator path leads to. */
  found: string;
  foundIdentity: LinkIdentity | null;
  expected: LinkIdentity;
  /** The disk that fits by identity, if any. */
  candidate: string | null;
  /** True when another locator path still leads to the right parent. */
  linkWorks: boolean;
}

export interface ScanStaleLink {
  child: string;
  /** The parent found by identity. */
  parent: string;
  targets: LocatorTarget[];
  /** Other disks carrying the same identity (copies). */
  alternatives: string[];
}

export interface PlanStep {
  command: string;
  args: string[];
  reason: string;
}

export interface TreePlan {
  root: string;
  action: 'merge' | 'convert' | 'none';
  steps: PlanStep[];
  /** Ready to paste: absolute, shell-quoted. */
  commands: string[];
  /** The file that holds the newest state when the steps are done (null when no safe plan exists). */
  result: string | null;
  notes: string[];
}

export interface ScanReport {
  folders: string[];
  summary: { disks: number; trees: number; orphans: number; identityMismatches: number; staleLinks: number; dirtyLogs: number; problems: number; cycles: number; pendingMerges: number; consistent: boolean };
  trees: ScanTree[];
  orphans: ScanOrphan[];
  identityMismatches: ScanMismatch[];
  staleLinks: ScanStaleLink[];
  dirtyLogs: Array<{ path: string; message: string }>;
  problems: CatalogProblem[];
  cycles: Array<{ paths: string[] }>;
  duplicates: Array<{ identity: LinkIdentity; paths: string[] }>;
  plan: TreePlan[];
  /** Interrupted merges (a journal beside a disk): finish or abandon them before anything else. */
  pendingMerges: Array<PendingMerge & { advice: string }>;
}

/** Finds every disk in the folders and rebuilds the checkpoint trees by identity. Read-only. */
export async function scanFolders(folders: string[], options: ScanOptions = {}): Promise<ScanReport> {
  const catalog = await catalogFolders(folders, options);
  const byReal = new Map(catalog.entries.map((e) => [e.realPath, e]));
  const problemReals = new Set<string>();
  for (const p of catalog.problems) problemReals.add(await realpath(p.path).catch(() => p.path));
  const roots = await Promise.all(catalog.folders.map((f) => realpath(f).catch(() => f)));

  const parentOf = new Map<CatalogEntry, CatalogEntry>();
  const stale = new Set<CatalogEntry>();
  const orphans: ScanOrphan[] = [];
  const mismatches: ScanMismatch[] = [];
  const staleLinks: ScanStaleLink[] = [];
  // Candidates by identity through an index (parentCandidates scans every entry: quadratic over a big folder).
  const byLinkId = groupBy(catalog.entries, (e) => linkKey(e.identity));
  const candidatesOf = (ref: ParentReference): CatalogEntry[] => {
    const keys = [linkKey(ref.expected), ...(ref.alternateDataWriteGuid ? [linkKey({ format: 'vhdx', dataWriteGuid: ref.alternateDataWriteGuid })] : [])];
    const found = new Set(keys.flatMap((k) => byLinkId.get(k) ?? []).filter((e) => identityMatches(ref, e.identity)));
    return [...found].sort((a, b) => (a.path < b.path ? -1 : 1));
  };
  const children = catalog.entries.filter((e) => e.parent);
  for (const [i, child] of children.entries()) {
    throwIfAborted(options.signal);
    const ref = child.parent!;
    const matches = candidatesOf(ref);
    const targets: LocatorTarget[] = [];
    let chosen: CatalogEntry | undefined;
    const mismatchFound: Array<{ t: LocatorTarget; entry?: CatalogEntry }> = [];
    for (const { entry, path } of await parentPathCandidates(child.path, ref)) {
      const s = await stat(path).catch(() => undefined);
      const t: LocatorTarget = { key: entry.key, stored: entry.path, path, state: 'missing' };
      targets.push(t);
      if (!s) continue;
      if (!s.isFile()) {
        t.state = 'not a file';
        continue;
      }
      const real = await realpath(path).catch(() => path);
      const found = byReal.get(real);
      if (found && matches.includes(found)) {
        t.state = 'parent';
        chosen ??= found;
      } else if (found) {
        t.state = 'other disk';
        mismatchFound.push({ t, entry: found });
      } else if (problemReals.has(real)) t.state = 'unreadable disk';
      else if (isInside(real, roots)) {
        t.state = 'not a disk';
        mismatchFound.push({ t });
      } else t.state = 'outside the scanned folders';
    }
    const linkWorks = chosen !== undefined;
    // Copies: prefer the one beside the child, then the first by path.
    chosen ??= matches.find((m) => dirname(m.path) === dirname(child.path)) ?? matches[0];
    for (const { t, entry } of mismatchFound) {
      mismatches.push({ child: child.path, key: t.key, stored: t.stored, found: t.path, foundIdentity: entry?.identity ?? null, expected: ref.expected, candidate: chosen?.path ?? null, linkWorks });
    }
    if (!chosen) {
      orphans.push({ path: child.path, format: child.format, expected: ref.expected, ...(ref.alternateDataWriteGuid ? { alternateDataWriteGuid: ref.alternateDataWriteGuid } : {}), lastKnown: ref.locators, targets });
    } else {
      parentOf.set(child, chosen);
      if (!linkWorks) {
        stale.add(child);
        staleLinks.push({ child: child.path, parent: chosen.path, targets, alternatives: matches.filter((m) => m !== chosen).map((m) => m.path) });
      }
    }
    options.onProgress?.(i + 1, children.length);
  }

  const cycles = cutCycles(catalog.entries, parentOf);
  const trees = buildTrees(catalog, parentOf);
  const context: PlanContext = {
    catalog, stale, parentOf, cycles, orphans,
    incomplete: trees.filter((t) => !t.complete),
    entry: new Map(catalog.entries.map((e) => [e.path, e])),
    taken: new Set(catalog.entries.map((e) => e.path)),
  };
  const plan: TreePlan[] = [];
  for (const tree of trees) plan.push(await planTree(tree, context));
  const dirtyLogs = catalog.entries
    .filter((e) => e.dirtyLog)
    .map((e) => ({ path: e.path, message: 'the VHDX log was not replayed (not closed cleanly): read-only opens replay it in memory; merge or reparent replays it into the file' }));
  const problems = catalog.problems;
  const pendingMerges = await pendingMergesIn([...catalog.folders, ...catalog.entries.map((e) => dirname(e.path))]);
  return {
    folders: catalog.folders,
    summary: {
      disks: catalog.entries.length,
      trees: trees.length,
      orphans: orphans.length,
      identityMismatches: mismatches.length,
      staleLinks: staleLinks.length,
      dirtyLogs: dirtyLogs.length,
      problems: problems.length,
      cycles: cycles.length,
      pendingMerges: pendingMerges.length,
      consistent: orphans.length + mismatches.length + problems.length + cycles.length + pendingMerges.length === 0,
    },
    trees,
    orphans,
    identityMismatches: mismatches,
    staleLinks,
    dirtyLogs,
    problems,
    cycles: cycles.map((c) => ({ paths: c.map((e) => e.path) })),
    duplicates: duplicatesOf(catalog.entries),
    plan,
    pendingMerges,
  };
}

/** Finds every cycle of parent links, removes the links of its members and returns the cycles. */
function cutCycles(entries: CatalogEntry[], parentOf: Map<CatalogEntry, CatalogEntry>): CatalogEntry[][] {
  const done = new Set<CatalogEntry>();
  const cycles: CatalogEntry[][] = [];
  for (const start of entries) {
    const stack: CatalogEntry[] = [];
    const onStack = new Set<CatalogEntry>();
    let at: CatalogEntry | undefined = start;
    while (at && !done.has(at) && !onStack.has(at)) {
      stack.push(at);
      onStack.add(at);
      at = parentOf.get(at);
    }
    if (at && onStack.has(at)) cycles.push(stack.slice(stack.indexOf(at)));
    for (const e of stack) done.add(e);
  }
  for (const cycle of cycles) for (const e of cycle) parentOf.delete(e);
  return cycles;
}

function buildTrees(catalog: Catalog, parentOf: Map<CatalogEntry, CatalogEntry>): ScanTree[] {
  const kids = new Map<CatalogEntry, CatalogEntry[]>();
  for (const [child, parent] of parentOf) {
    const list = kids.get(parent);
    if (list) list.push(child);
    else kids.set(parent, [child]);
  }
  const interiorIds = new Map<string, CatalogEntry>();
  for (const e of catalog.entries) if (kids.has(e)) interiorIds.set(identityKey(e.identity), e);
  const trees: ScanTree[] = [];
  for (const root of catalog.entries.filter((e) => !parentOf.has(e))) {
    const nodes: ScanNode[] = [];
    // Depth first, iteratively (a hostile folder may hold very long chains).
    const stack: Array<[CatalogEntry, number]> = [[root, 0]];
    while (stack.length > 0) {
      const [e, depth] = stack.pop()!;
      const under = [...(kids.get(e) ?? [])].sort((a, b) => (a.path < b.path ? -1 : 1));
      const copyOf = under.length === 0 ? interiorIds.get(identityKey(e.identity)) : undefined;
      nodes.push({
        path: e.path, format: e.format, type: e.diskType, virtualSize: e.virtualSize, allocatedBytes: e.allocatedBytes, fileSize: e.fileSize,
        mtime: new Date(e.mtimeMs).toISOString(), mtimeMs: e.mtimeMs, depth, parent: parentOf.get(e)?.path ?? null,
        children: under.map((c) => c.path), dirtyLog: e.dirtyLog, ...(copyOf && copyOf !== e ? { duplicateOf: copyOf.path } : {}),
      });
      for (const c of under.reverse()) stack.push([c, depth + 1]);
    }
    const byPath = new Map(nodes.map((n) => [n.path, n]));
    const chainOf = (n: ScanNode): string[] => {
      const chain = [n.path];
      for (let at = n.parent; at !== null; at = byPath.get(at)!.parent) chain.push(at);
      return chain;
    };
    const leaves = nodes
      .filter((n) => n.children.length === 0)
      .sort((a, b) => Number(a.duplicateOf !== undefined) - Number(b.duplicateOf !== undefined) || b.mtimeMs - a.mtimeMs || (a.path < b.path ? -1 : 1))
      .map((n, i): ScanLeaf => ({ path: n.path, mtime: n.mtime, depth: n.depth, newest: i === 0, chain: chainOf(n), ...(n.duplicateOf ? { duplicateOf: n.duplicateOf } : {}) }));
    trees.push({
      root: root.path, format: root.format, complete: root.diskType !== 'differencing', nodes, leaves, newestLeaf: leaves[0]!.path,
      bytes: nodes.reduce((s, n) => s + n.fileSize, 0),
    });
  }
  return trees;
}

/** Entries grouped by `key`, each group in catalog order. */
function groupBy(entries: CatalogEntry[], key: (e: CatalogEntry) => string): Map<string, CatalogEntry[]> {
  const groups = new Map<string, CatalogEntry[]>();
  for (const e of entries) {
    const list = groups.get(key(e));
    if (list) list.push(e);
    else groups.set(key(e), [e]);
  }
  return groups;
}

function duplicatesOf(entries: CatalogEntry[]): ScanReport['duplicates'] {
  const groups = groupBy(entries, (e) => identityKey(e.identity));
  return [...groups.values()].filter((g) => g.length > 1).map((g) => ({ identity: g[0]!.identity, paths: g.map((e) => e.path) }));
}

interface PlanContext {
  catalog: Catalog;
  /** Trees whose base is missing or whose root was cut from a cycle. */
  incomplete: ScanTree[];
  entry: Map<string, CatalogEntry>;
  /** Children whose stored paths do not lead to the parent found by identity. */
  stale: Set<CatalogEntry>;
  parentOf: Map<CatalogEntry, CatalogEntry>;
  cycles: CatalogEntry[][];
  orphans: ScanOrphan[];
  /** Paths that exist or that an earlier step will create. */
  taken: Set<string>;
}

/** The commands that turn a tree's newest leaf into one standalone disk, or a note why not. */
async function planTree(tree: ScanTree, { catalog, incomplete, entry, stale, parentOf, cycles, orphans, taken }: PlanContext): Promise<TreePlan> {
  const plan: TreePlan = { root: tree.root, action: 'none', steps: [], commands: [], result: null, notes: [] };
  const rootEntry = entry.get(tree.root)!;
  if (!tree.complete) {
    if (cycles.some((c) => c.includes(rootEntry))) plan.notes.push(`${tree.root} is part of a parent cycle (see cycles): its link was not followed; no commands are safe until the cycle is broken`);
    else {
      plan.notes.push(`the base of this tree is missing: ${tree.root} is a differencing disk whose parent was not found (see orphans); find the parent file (or scan its folder too) before merging or converting`);
      for (const t of orphans.find((o) => o.path === tree.root)?.targets ?? []) {
        if (t.state === 'outside the scanned folders') plan.notes.push(`${t.path} (named by ${t.key}) exists outside the scanned folders: scan its folder too`);
        if (t.state === 'unreadable disk') plan.notes.push(`${t.path} (named by ${t.key}) looks like a disk but could not be opened (see problems): it may be the damaged parent`);
      }
    }
    return plan;
  }
  if (tree.nodes.length === 1) {
    plan.result = tree.root;
    plan.notes.push(`${tree.root} is already a standalone disk`);
    return plan;
  }
  const sectorClash = tree.nodes.find((n) => n.parent && entry.get(n.path)!.logicalSectorSize !== entry.get(n.parent)!.logicalSectorSize);
  if (sectorClash) {
    plan.notes.push(`${sectorClash.path} and its parent ${sectorClash.parent} have different logical sector sizes; diskchain refuses such a chain, so no commands are given`);
    return plan;
  }
  const deepest = tree.nodes.reduce((m, n) => Math.max(m, n.depth), 0);
  if (deepest >= MAX_CHAIN_DEPTH) {
    plan.notes.push(`a chain in this tree is ${deepest + 1} disks deep; diskchain opens at most ${MAX_CHAIN_DEPTH}, so no commands are given`);
    return plan;
  }
  const branching = tree.nodes.filter((n) => n.children.length > 1);
  const related = incomplete.filter((t) => t.format === tree.format && entry.get(t.root)!.virtualSize === rootEntry.virtualSize);
  const cautions: string[] = [];
  for (const b of branching) cautions.push(`${b.path} has ${b.children.length} children (${b.children.join(', ')}): merging would change it under the other branches, so each leaf is converted to a new standalone disk instead (non-destructive)`);
  if (related.length > 0) cautions.push(`disks whose parent is missing or in a cycle (${related.map((t) => t.root).join(', ')}) have this tree's format and size and may descend from it: merging could destroy a parent they need, so leaves are converted instead (non-destructive)`);
  if (catalog.problems.length > 0) cautions.push(`${catalog.problems.length} file(s) or folder(s) could not be read or were not scanned (see problems); one may hold a checkpoint of this tree, so leaves are converted instead of merged (non-destructive)`);
  plan.action = cautions.length > 0 ? 'convert' : 'merge';
  plan.notes.push(...cautions);
  const leaves = plan.action === 'merge' ? tree.leaves.slice(0, 1) : tree.leaves.filter((l) => !l.duplicateOf);
  for (const l of tree.leaves) if (l.duplicateOf) plan.notes.push(`${l.path} is a copy of ${l.duplicateOf} (same identity), an older state: not converted`);

  const add = (args: string[], reason: string): void => {
    plan.steps.push({ command: 'diskchain', args, reason });
    plan.commands.push(['diskchain', ...args].map(shellQuote).join(' '));
  };
  // diskchain opens a chain only from the folder of the disk named (and below) unless told of more
  // folders (--search-path), so ancestors elsewhere are named.
  const searchPaths = async (path: string): Promise<string[]> => {
    const from = await realpath(dirname(path)).catch(() => dirname(path));
    const dirs: string[] = [];
    for (let a = parentOf.get(entry.get(path)!); a; a = parentOf.get(a)) if (!isInside(a.realPath, [from])) dirs.push(dirname(a.path));
    const outer = [...new Set(dirs)].sort((x, y) => x.length - y.length);
    return outer.filter((d, i) => !outer.slice(0, i).some((o) => isInside(d, [o])));
  };
  const withSearch = async (args: string[], opened: string): Promise<string[]> => [...args, ...(await searchPaths(opened)).flatMap((d) => ['--search-path', d])];
  const fixed = new Set<string>();
  for (const leaf of leaves) {
    for (const path of [...leaf.chain].reverse()) {
      const e = entry.get(path)!;
      if (!stale.has(e) || fixed.has(path)) continue;
      fixed.add(path);
      const parent = parentOf.get(e)!;
      if (parent.virtualSize !== e.virtualSize) plan.notes.push(`${path} (${e.virtualSize} bytes) and its parent ${parent.path} (${parent.virtualSize} bytes) differ in virtual size: reparent may refuse them`);
      add(await withSearch(['reparent', path, parent.path], parent.path), `${path} no longer finds its parent by its stored paths (renamed or moved); ${parent.path} carries the identity it recorded (${describeIdentity(e.parent!.expected)})`);
    }
  }
  const dirty = tree.nodes.filter((n) => n.dirtyLog).map((n) => n.path);
  if (dirty.length > 0) plan.notes.push(`dirty log in ${dirty.join(', ')}: the first writable open (merge, reparent) replays it into the file`);
  if (plan.action === 'merge') {
    const chain = leaves[0]!.chain;
    for (let i = 0; i < chain.length - 1; i++) add(await withSearch(['merge', chain[i]!], chain[i]!), `merge ${chain[i]} into its parent ${chain[i + 1]} (${chain[i]} is removed)`);
    plan.result = chain[chain.length - 1]!;
  } else {
    for (const leaf of leaves) {
      const target = await freshPath(leaf.path, tree.format, taken);
      add(await withSearch(['convert', leaf.path, target, '-O', tree.format], leaf.path), `write ${leaf.newest ? 'the newest state' : 'the state'} ${leaf.path} (through its chain) into the new standalone disk ${target}; nothing existing is changed`);
      if (leaf.newest) plan.result = target;
    }
  }
  return plan;
}

/** `<leaf stem>-standalone.<ext>` beside the leaf, numbered when that name is taken. */
async function freshPath(leaf: string, format: 'vhdx' | 'vhd', taken: Set<string>): Promise<string> {
  const stem = join(dirname(leaf), basename(leaf, extname(leaf)));
  for (let n = 1; n <= 1000; n++) {
    const path = `${stem}-standalone${n === 1 ? '' : `-${n}`}.${format}`;
    if (taken.has(path) || (await stat(path).catch(() => undefined))) continue;
    taken.add(path);
    return path;
  }
  throw new DiskchainError('IO', `no free name for a standalone copy beside ${leaf}`, { file: leaf });
}

/** Single-quotes anything a POSIX shell could read differently. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
