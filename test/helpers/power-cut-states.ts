/**
 * The crash half of the power-cut model (docs/crash-safety.md): from a PowerCutRecorder's events, the
 * states a power cut at a given point may leave, and a runner that puts each on disk and checks it.
 *
 * A crash point k means events [0, k) were issued. For each file (inode), the writes and resizes
 * before the start of its last completed flush are durable; those after it are pending, and any subset
 * of them may have reached the disk, in any order (applied in issue order, so a later overlapping
 * write wins when both landed). With `torn`, a pending write that lands may land only in part, whole
 * 512-byte sectors each (a disk writes sectors atomically, not requests). Names (creations, renames,
 * removals) before a folder's last flush are durable; after it, a prefix of them in issue order has
 * reached the disk (journaling file systems commit directory operations in order; this model does not
 * explore reordered ones). Folders are not modelled, only the files under them: a folder exists in a
 * state when a file under it does; renaming a folder moves every name under it.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Rng } from './vhdx-util.js';
import type { ModelEvent, PowerCutRecorder } from './power-cut-recorder.js';

const SECTOR = 512;

export interface CrashState {
  /** Events issued before the cut. */
  point: number;
  label: string;
  files: Map<string, Uint8Array>;
  /** The times each file shows, where known (path → a file holding them): see statesAt. */
  times: Map<string, string>;
}

export interface StateOptions {
  seed: number;
  /** All subsets of a point's pending writes (with every folder prefix) when they are at most this many states. */
  exhaustiveUpTo?: number;
  /** Otherwise: none, all, and this many random subsets. */
  samples?: number;
  /** Random subsets may tear the writes they keep, sector by sector. */
  torn?: boolean;
  /** At most this many crash points (thinned evenly); every barrier's two sides and a point between barriers otherwise. */
  maxPoints?: number;
}

type DataOp = Extract<ModelEvent, { kind: 'write' | 'truncate' }>;
type DirOp = Extract<ModelEvent, { kind: 'link' | 'rename' | 'unlink' }>;

const isBarrier = (e: ModelEvent): boolean => (e.kind === 'flush' && !e.dropped) || e.kind === 'sync-folder';

/** Just before and just after every flush and folder flush (dropped ones too), one point inside each stretch between them, the start and the end. */
export function crashPoints(rec: PowerCutRecorder, seed: number, maxPoints?: number): number[] {
  const rng = new Rng(seed);
  const points = new Set<number>([0, rec.events.length]);
  let previous = 0;
  rec.events.forEach((e, i) => {
    if (!isBarrier(e) && e.kind !== 'flush') return;
    points.add(i);
    points.add(i + 1);
    if (i - previous > 2) points.add(previous + 1 + rng.int(i - previous - 1));
    previous = i + 1;
  });
  let list = [...points].filter((p) => p <= rec.events.length).sort((a, b) => a - b);
  if (maxPoints !== undefined && list.length > maxPoints) {
    const step = list.length / maxPoints;
    list = Array.from({ length: maxPoints }, (_, i) => list[Math.floor(i * step)]!).concat(list[list.length - 1]!);
    list = [...new Set(list)];
  }
  return list;
}

interface Pending {
  /** Per inode: content with every durable op applied. */
  durable: Map<number, Uint8Array>;
  data: Array<{ at: number; op: DataOp }>;
  /** Per folder: the durable names are applied; these may follow, as a prefix. */
  dirs: Map<string, Array<{ at: number; op: DirOp }>>;
  durableNames: Map<string, number>;
}

function pendingAt(rec: PowerCutRecorder, k: number): Pending {
  const flushedBefore = new Map<number, number>();
  const syncedBefore = new Map<string, number>();
  for (let i = 0; i < k; i++) {
    const e = rec.events[i]!;
    if (e.kind === 'flush' && !e.dropped) flushedBefore.set(e.inode, Math.max(flushedBefore.get(e.inode) ?? 0, e.since));
    if (e.kind === 'sync-folder') syncedBefore.set(e.folder, i);
  }
  const durable = new Map<number, Uint8Array>();
  const contentOf = (inode: number): Uint8Array => {
    let c = durable.get(inode);
    if (!c) durable.set(inode, (c = rec.initialContent.get(inode)?.slice() ?? new Uint8Array(0)));
    return c;
  };
  const data: Pending['data'] = [];
  const dirs: Pending['dirs'] = new Map();
  const durableNames = new Map(rec.initialNames);
  for (let i = 0; i < k; i++) {
    const e = rec.events[i]!;
    if (e.kind === 'write' || e.kind === 'truncate') {
      if (i < (flushedBefore.get(e.inode) ?? 0)) durable.set(e.inode, applyData(contentOf(e.inode), e));
      else data.push({ at: i, op: e });
    } else if (e.kind === 'link' || e.kind === 'rename' || e.kind === 'unlink') {
      if (i < (syncedBefore.get(e.folder) ?? -1)) applyDir(durableNames, e);
      else {
        const list = dirs.get(e.folder) ?? [];
        list.push({ at: i, op: e });
        dirs.set(e.folder, list);
      }
    }
  }
  for (const inode of new Set([...durableNames.values(), ...data.map((d) => d.op.inode), ...[...dirs.values()].flat().flatMap((d) => (d.op.kind === 'link' ? [d.op.inode] : []))])) contentOf(inode);
  return { durable, data, dirs, durableNames };
}

function applyData(content: Uint8Array, op: DataOp, sectors?: (s: number) => boolean): Uint8Array {
  if (op.kind === 'truncate') {
    const next = new Uint8Array(op.length);
    next.set(content.subarray(0, Math.min(content.length, op.length)));
    return next;
  }
  const end = op.offset + op.data.length;
  let out = content;
  if (end > content.length) {
    out = new Uint8Array(end);
    out.set(content);
  }
  if (!sectors) out.set(op.data, op.offset);
  else {
    for (let s = 0; s * SECTOR < op.data.length; s++) if (sectors(s)) out.set(op.data.subarray(s * SECTOR, (s + 1) * SECTOR), op.offset + s * SECTOR);
  }
  return out;
}

function applyDir(names: Map<string, number>, op: DirOp): void {
  if (op.kind === 'link') names.set(op.path, op.inode);
  else if (op.kind === 'unlink') names.delete(op.path);
  else {
    // A file, or a folder with every name under it.
    const moved = [...names].filter(([path]) => path === op.from || path.startsWith(`${op.from}/`));
    for (const [path] of moved) names.delete(path);
    for (const [path, inode] of moved) names.set(op.to + path.slice(op.from.length), inode);
  }
}

/** A choice at one point: which pending data ops land (and, torn, which of their sectors), and how far each folder got. */
interface Choice {
  keep: boolean[];
  torn: Array<((s: number) => boolean) | undefined>;
  prefix: Map<string, number>;
  label: string;
}

function* choicesAt(p: Pending, k: number, options: StateOptions): Generator<Choice> {
  const n = p.data.length;
  const folders = [...p.dirs.entries()];
  const combos = 2 ** n * folders.reduce((m, [, ops]) => m * (ops.length + 1), 1);
  const none = (): boolean[] => new Array<boolean>(n).fill(false);
  const untorn = (): undefined[] => new Array<undefined>(n).fill(undefined);
  if (n <= 20 && combos <= (options.exhaustiveUpTo ?? 64)) {
    for (let c = 0; c < combos; c++) {
      let rest = c;
      const keep = none().map((_, i) => ((rest >> i) & 1) === 1);
      rest = Math.floor(c / 2 ** n);
      const prefix = new Map<string, number>();
      for (const [folder, ops] of folders) {
        prefix.set(folder, rest % (ops.length + 1));
        rest = Math.floor(rest / (ops.length + 1));
      }
      yield { keep, torn: untorn(), prefix, label: `subset ${c} of ${combos}` };
    }
    return;
  }
  const rng = new Rng(options.seed * 7919 + k);
  yield { keep: none(), torn: untorn(), prefix: new Map(folders.map(([f]) => [f, 0])), label: 'none of the pending' };
  yield { keep: none().map(() => true), torn: untorn(), prefix: new Map(folders.map(([f, ops]) => [f, ops.length])), label: 'all of the pending' };
  for (let s = 0; s < (options.samples ?? 6); s++) {
    const keep = none().map(() => rng.int(2) === 1);
    const torn = keep.map((kept, i) => {
      const op = p.data[i]!.op;
      if (!kept || !options.torn || op.kind !== 'write' || op.data.length <= SECTOR || rng.int(4) !== 0) return undefined;
      const bits = Array.from({ length: op.data.length / SECTOR }, () => rng.int(2) === 1);
      return (sector: number) => bits[sector] ?? false;
    });
    const prefix = new Map(folders.map(([f, ops]) => [f, rng.int(ops.length + 1)]));
    yield { keep, torn, prefix, label: `random subset ${s} (${keep.filter(Boolean).length}/${n} writes, ${torn.filter(Boolean).length} torn)` };
  }
}

/** The states a power cut at point `k` may leave. */
export function* statesAt(rec: PowerCutRecorder, k: number, options: StateOptions): Generator<CrashState> {
  const p = pendingAt(rec, k);
  // Times: a file's as of its last flush (a flush makes its inode durable), or as recording began;
  // a file a pending write lands in has new ones (now).
  const timesOf = new Map(rec.initialTimes);
  for (const e of rec.events.slice(0, k)) if (e.kind === 'flush' && e.times) timesOf.set(e.inode, e.times);
  const last = rec.events[k - 1];
  const where = last ? `after event ${k - 1} (${describeEvent(last)})` : 'before anything';
  for (const c of choicesAt(p, k, options)) {
    const names = new Map(p.durableNames);
    // The landed prefixes, in issue order across folders (a folder renamed after names were made in it moves them).
    const landedOps = [...p.dirs].flatMap(([folder, ops]) => ops.slice(0, c.prefix.get(folder) ?? 0)).sort((a, b) => a.at - b.at);
    for (const { op } of landedOps) applyDir(names, op);
    const content = new Map<number, Uint8Array>();
    const wanted = new Set(names.values());
    for (const inode of wanted) content.set(inode, p.durable.get(inode) ?? new Uint8Array(0));
    p.data.forEach(({ op }, i) => {
      if (!c.keep[i] || !wanted.has(op.inode)) return;
      const base = content.get(op.inode)!;
      // Copy on the first pending op that lands, so the durable content stays shared.
      content.set(op.inode, applyData(base === p.durable.get(op.inode) ? base.slice() : base, op, c.torn[i]));
    });
    const files = new Map<string, Uint8Array>();
    const times = new Map<string, string>();
    const landed = new Set(p.data.flatMap(({ op }, i) => (c.keep[i] ? [op.inode] : [])));
    for (const [path, inode] of names) {
      files.set(path, content.get(inode)!);
      const t = timesOf.get(inode);
      if (t && !landed.has(inode)) times.set(path, t);
    }
    yield { point: k, label: `cut ${where}, ${p.data.length} writes pending: ${c.label}`, files, times };
  }
}

export function describeEvent(e: ModelEvent): string {
  switch (e.kind) {
    case 'write':
      return `write ${e.data.length} B at ${e.offset} to file #${e.inode}`;
    case 'truncate':
      return `resize file #${e.inode} to ${e.length}`;
    case 'flush':
      return `${e.dropped ? 'dropped ' : ''}flush of file #${e.inode} in ${e.where}`;
    case 'link':
      return `create ${e.path}`;
    case 'rename':
      return `rename ${e.from} to ${e.to}`;
    case 'unlink':
      return `remove ${e.path}`;
    case 'sync-folder':
      return `flush folder ${e.folder}`;
    case 'mark':
      return `mark ${e.label}`;
  }
}

/** Replaces everything under `root` with the state's files. */
export function materialize(root: string, state: CrashState): void {
  for (const name of readdirSync(root)) rmSync(join(root, name), { recursive: true, force: true });
  for (const [path, content] of state.files) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, content);
    const t = state.times.get(path);
    if (t) execFileSync('touch', ['-r', t, path]);
  }
}

export interface CrashRun {
  points: number;
  states: number;
  failures: string[];
}

/**
 * Puts every state of every crash point on disk under the recorder's root and runs `check` on it
 * (an error is a failure, reported with the state's label). Stops after `maxFailures` (default 3).
 */
export async function runCrashStates(
  rec: PowerCutRecorder,
  options: StateOptions & { points?: number[]; maxFailures?: number },
  check: (state: CrashState, index: number) => Promise<void>,
): Promise<CrashRun> {
  const points = options.points ?? crashPoints(rec, options.seed, options.maxPoints);
  const failures: string[] = [];
  let states = 0;
  for (const k of points) {
    for (const state of statesAt(rec, k, options)) {
      materialize(rec.root, state);
      try {
        await check(state, states);
      } catch (e) {
        failures.push(`${state.label}: ${e instanceof Error ? e.message : String(e)}`);
        if (failures.length >= (options.maxFailures ?? 3)) return { points: points.length, states: states + 1, failures };
      }
      states++;
    }
  }
  return { points: points.length, states, failures };
}
