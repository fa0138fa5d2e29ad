// The checkpoint tree as an ARIA tree (WAI-ARIA APG "Tree View"): each checkpoint a treeitem named by
// its name, Now a treeitem named "Now" under the checkpoint it derives from, as Hyper-V Manager's
// checkpoint pane shows it. One item is in the tab order (roving tabindex); the keys:
//   Down / Up      next / previous visible item      Right   expand, or go to the first child
//   Home / End     first / last visible item         Left    collapse, or go to the parent
//   Enter / Space  select the item (the details pane shows it)
import { useLayoutEffect, useRef, useState } from 'preact/hooks';
import type { VmDescription } from '../../api/index.js';
import { bytes, when } from './format.js';

export const NOW = 'now';

type Checkpoint = VmDescription['checkpoints'][number];

interface Node {
  id: string;
  checkpoint: Checkpoint | null;
  children: Node[];
  parent: Node | null;
  level: number;
}

/** The forest: children in order of creation, Now after its siblings. */
function buildTree(vm: VmDescription): Node[] {
  const build = (parentId: string | null, parent: Node | null, level: number): Node[] => {
    const kids = vm.checkpoints.filter((c) => c.parent === parentId).sort((a, b) => (a.created < b.created ? -1 : 1));
    const nodes: Node[] = kids.map((c) => {
      const node: Node = { id: c.id, checkpoint: c, children: [], parent, level };
      node.children = build(c.id, node, level + 1);
      return node;
    });
    if (vm.now.parent === parentId) nodes.push({ id: NOW, checkpoint: null, children: [], parent, level });
    return nodes;
  };
  return build(null, null, 1);
}

function visible(nodes: Node[], collapsed: Set<string>): Node[] {
  const out: Node[] = [];
  const walk = (list: Node[]): void => {
    for (const n of list) {
      out.push(n);
      if (!collapsed.has(n.id)) walk(n.children);
    }
  };
  walk(nodes);
  return out;
}

export function CheckpointTree({ vm, selected, onSelect, label }: { vm: VmDescription; selected: string | null; onSelect: (id: string) => void; label: string }) {
  const roots = buildTree(vm);
  const [collapsed, setCollapsed] = useState<Set<string>>(new Set());
  const [focused, setFocused] = useState<string>(selected ?? NOW);
  const list = useRef<HTMLUListElement>(null);
  const shown = visible(roots, collapsed);
  const current = shown.find((n) => n.id === focused) ?? shown.find((n) => n.id === NOW) ?? shown[0];
  const moveFocus = useRef(false);

  useLayoutEffect(() => {
    if (!moveFocus.current || !current) return;
    moveFocus.current = false;
    list.current?.querySelector<HTMLElement>(`[data-node="${current.id}"]`)?.focus();
  });

  const focus = (n: Node | undefined): void => {
    if (!n) return;
    moveFocus.current = true;
    setFocused(n.id);
  };
  const toggle = (n: Node, open: boolean): void => {
    const next = new Set(collapsed);
    if (open) next.delete(n.id);
    else next.add(n.id);
    setCollapsed(next);
  };

  const onKey = (e: KeyboardEvent): void => {
    if (!current) return;
    const at = shown.indexOf(current);
    const expanded = current.children.length > 0 && !collapsed.has(current.id);
    switch (e.key) {
      case 'ArrowDown':
        focus(shown[at + 1]);
        break;
      case 'ArrowUp':
        focus(shown[at - 1]);
        break;
      case 'Home':
        focus(shown[0]);
        break;
      case 'End':
        focus(shown[shown.length - 1]);
        break;
      case 'ArrowRight':
        if (current.children.length === 0) return;
        if (expanded) focus(current.children[0]);
        else toggle(current, true);
        break;
      case 'ArrowLeft':
        if (expanded) toggle(current, false);
        else focus(current.parent ?? undefined);
        break;
      case 'Enter':
      case ' ':
        onSelect(current.id);
        break;
      default:
        return;
    }
    e.preventDefault();
  };

  const item = (n: Node) => {
    const c = n.checkpoint;
    const hasKids = n.children.length > 0;
    const open = hasKids && !collapsed.has(n.id);
    const isSel = selected === n.id;
    return (
      <li
        key={n.id}
        role="treeitem"
        aria-label={c ? c.name : 'Now'}
        aria-level={n.level}
        aria-selected={isSel}
        aria-expanded={hasKids ? open : undefined}
        aria-current={c ? undefined : 'location'}
        tabIndex={current?.id === n.id ? 0 : -1}
        data-node={n.id}
        class="tree-item"
        onFocus={(e) => {
          if (e.target === e.currentTarget) setFocused(n.id);
        }}
        onClick={(e) => {
          e.stopPropagation();
          setFocused(n.id);
          onSelect(n.id);
        }}
      >
        <div class={`tree-row${isSel ? ' selected' : ''}${c ? '' : ' now'}`}>
          <span
            class={`twisty${hasKids ? '' : ' leaf'}`}
            aria-hidden="true"
            onClick={(e) => {
              if (!hasKids) return;
              e.stopPropagation();
              toggle(n, !open);
            }}
          >
            {hasKids ? (open ? '▾' : '▸') : ''}
          </span>
          {c ? (
            <>
              <span class="node-name">{c.name}</span>
              <span class="node-meta">
                <span>{when(c.created)}</span>
                <span class="badge neutral">{c.type}</span>
                {c.group && <span class="badge accent" title={`group ${c.group}`}>group</span>}
                <span title="bytes on disk of the layers this checkpoint froze, its config and state">own {bytes(c.ownBytes)}</span>
                <Reclaim bytes={c.reclaimBytes} />
              </span>
            </>
          ) : (
            <>
              <span class="node-name">▶ Now</span>
              <span class="node-meta">
                <span>you are here</span>
                <span title="bytes written since the checkpoint Now derives from">own {bytes(vm.now.ownBytes)}</span>
              </span>
            </>
          )}
        </div>
        {open && (
          <ul role="group">
            {n.children.map(item)}
          </ul>
        )}
      </li>
    );
  };

  return (
    <ul class="tree" role="tree" aria-label={label} ref={list} onKeyDown={onKey}>
      {roots.map(item)}
    </ul>
  );
}

/** What removing a checkpoint gives back; a merge can grow its survivor by more than the files deleted. */
export function Reclaim({ bytes: n }: { bytes: number | null }) {
  const title = 'what removing it gives back: files deleted, less what the merges that follow add';
  // Not measured while the VM runs or a job works on it (every layer's allocation map would be read under a writer).
  if (n === null) return <span title={`${title}; measured when the VM is off and idle`}>frees: not measured now</span>;
  return <span title={title}>{n >= 0 ? `frees ${bytes(n)}` : `removal grows by ${bytes(-n)}`}</span>;
}
