/**
 * Questions about a manifest's disk graph and checkpoint tree (pure functions, nothing read or
 * written). A node is *named* when a checkpoint or Now refers to it; an unnamed node is a layer
 * kept only because something derives from it (Hyper-V keeps such a file until one child is left).
 */
import type { Checkpoint, DiskNode, Manifest } from './manifest.js';

export function nodeById(m: Manifest, id: string): DiskNode {
  const n = m.nodes.find((x) => x.id === id);
  if (!n) throw new Error(`internal: no node ${id}`);
  return n;
}

export function checkpointById(m: Manifest, id: string): Checkpoint {
  const c = m.checkpoints.find((x) => x.id === id);
  if (!c) throw new Error(`internal: no checkpoint ${id}`);
  return c;
}

export function childNodes(m: Manifest, id: string): DiskNode[] {
  return m.nodes.filter((n) => n.parent === id);
}

/** Who names each node: a checkpoint id, or 'now'. */
export function namesOfNodes(m: Manifest): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of m.checkpoints) for (const n of Object.values(c.disks)) out.set(n, c.id);
  for (const n of Object.values(m.now.disks)) out.set(n, 'now');
  return out;
}

/** The node and its ancestors, from the node to the root of its disk. */
export function chainOf(m: Manifest, id: string): DiskNode[] {
  const out: DiskNode[] = [];
  for (let at: string | null = id; at !== null; at = nodeById(m, at).parent) out.push(nodeById(m, at));
  return out;
}

export function childCheckpoints(m: Manifest, id: string | null): Checkpoint[] {
  return m.checkpoints.filter((c) => c.parent === id);
}

/** The checkpoint and every checkpoint below it. */
export function subtreeOf(m: Manifest, id: string): Checkpoint[] {
  const out: Checkpoint[] = [];
  const walk = (c: Checkpoint): void => {
    out.push(c);
    for (const k of childCheckpoints(m, c.id)) walk(k);
  };
  walk(checkpointById(m, id));
  return out;
}

/** True when `ancestor` is `id` or above it in the tree. */
export function isInSubtree(m: Manifest, ancestor: string, id: string | null): boolean {
  for (let at = id; at !== null; at = checkpointById(m, at).parent) if (at === ancestor) return true;
  return false;
}

/**
 * Drops unnamed nodes that nothing derives from, repeatedly (a removed off-branch leaf frees its
 * parent layer too when that was unnamed). Returns the manifest without them and the nodes dropped.
 */
export function pruneUnnamedLeaves(m: Manifest): { manifest: Manifest; dropped: DiskNode[] } {
  let nodes = m.nodes;
  const dropped: DiskNode[] = [];
  const named = namesOfNodes(m);
  for (;;) {
    const parents = new Set(nodes.map((n) => n.parent).filter((p): p is string => p !== null));
    const gone = nodes.filter((n) => !named.has(n.id) && !parents.has(n.id));
    if (gone.length === 0) return { manifest: { ...m, nodes }, dropped };
    dropped.push(...gone);
    const ids = new Set(gone.map((n) => n.id));
    nodes = nodes.filter((n) => !ids.has(n.id));
  }
}

/** Unnamed nodes with exactly one child: layers to merge with that child. */
export function collapsibleNodes(m: Manifest): Array<{ node: DiskNode; child: DiskNode }> {
  const named = namesOfNodes(m);
  const out: Array<{ node: DiskNode; child: DiskNode }> = [];
  for (const n of m.nodes) {
    if (named.has(n.id)) continue;
    const kids = childNodes(m, n.id);
    if (kids.length === 1) out.push({ node: n, child: kids[0]! });
  }
  return out;
}
