/**
 * The recording half of the power-cut model (docs/crash-safety.md). While installed, it listens to
 * src/io/file-events.ts and keeps, for every file under one folder, what a disk controller and a file
 * system would have been asked to do: data writes and resizes per file (inode), flushes of a file,
 * and the creations, renames, hard links and removals of names with the folder flushes that make them
 * durable; a file another process wrote (QEMU's state files) as created and written when it is reported.
 * Marks put the workload's own steps (a guest write issued, a flush acknowledged) in the same order.
 *
 * A flush can be dropped from the model (`dropFlush`): the real flush still happens, but the model
 * treats the writes before it as not durable. This is how the tests show the checker bites.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import { setFileEventListener, type FileEvent } from '../../src/io/file-events.js';

export type ModelEvent =
  | { kind: 'write'; inode: number; offset: number; data: Uint8Array }
  | { kind: 'truncate'; inode: number; length: number }
  /**
   * A flush that returned: every write to the inode before event `since` (its start) is durable, and
   * so are its times, kept in the file `times` (what a crash state restores when no later write lands).
   */
  | { kind: 'flush'; inode: number; since: number; dropped: boolean; where: string; times?: string }
  | { kind: 'link'; folder: string; path: string; inode: number }
  | { kind: 'rename'; folder: string; from: string; to: string }
  | { kind: 'unlink'; folder: string; path: string }
  | { kind: 'sync-folder'; folder: string }
  | { kind: 'mark'; label: string; value?: unknown };

/** Which flushes to drop: `stack` is the call stack of FileSource.flush or of syncFile (async frames included). */
export type FlushFilter = (flush: { path: string; stack: string }) => boolean;

export class PowerCutRecorder {
  readonly events: ModelEvent[] = [];
  /** Content of each inode when recording began (inodes of files that existed then). */
  readonly initialContent = new Map<number, Uint8Array>();
  /** Names (absolute paths) when recording began. */
  readonly initialNames = new Map<string, number>();
  /**
   * Per inode, a file holding its times when recording began (exact to the nanosecond, which a
   * utimes() call from JavaScript is not): a file nothing writes keeps them through a crash.
   */
  readonly initialTimes = new Map<number, string>();
  dropFlush: FlushFilter | undefined;
  droppedFlushes = 0;
  private readonly names = new Map<string, number>();
  private readonly opens = new Map<number, { inode: number; path: string }>();
  private readonly flushStarts = new Map<number, number[]>();
  private nextInode = 1;
  private restore: (() => void) | undefined;

  private constructor(readonly root: string) {}

  /**
   * Snapshots every file under `root` and starts listening. `durableTimes` names files whose times on
   * disk are older than what stat shows now (path → a file holding those): their last writer made the
   * data durable but not the times (fdatasync), so a cut before the next flush of the file shows them.
   */
  static start(root: string, dropFlush?: FlushFilter, durableTimes?: Map<string, string>): PowerCutRecorder {
    const rec = new PowerCutRecorder(resolve(root));
    rec.dropFlush = dropFlush;
    for (const path of listFiles(rec.root)) {
      const inode = rec.nextInode++;
      rec.initialContent.set(inode, new Uint8Array(readFileSync(path)));
      rec.initialTimes.set(inode, durableTimes?.get(path) ?? rec.keepTimes(path, `initial-${inode}`));
      rec.initialNames.set(path, inode);
      rec.names.set(path, inode);
    }
    const previous = setFileEventListener((e) => rec.onEvent(e));
    rec.restore = () => setFileEventListener(previous);
    return rec;
  }

  /** Copies the times of `path` onto a file of their own (touch -r: exact to the nanosecond); returns its path. */
  private keepTimes(path: string, name: string): string {
    const times = join(`${this.root}.times`, name);
    mkdirSync(dirname(times), { recursive: true });
    execFileSync('touch', ['-r', path, times]);
    return times;
  }

  stop(): void {
    this.restore?.();
    this.restore = undefined;
  }

  mark(label: string, value?: unknown): void {
    this.events.push({ kind: 'mark', label, ...(value === undefined ? {} : { value }) });
  }

  /** Every mark with `label`, with its index in the events. */
  marks<T>(label: string): Array<{ at: number; value: T }> {
    const out: Array<{ at: number; value: T }> = [];
    this.events.forEach((e, at) => {
      if (e.kind === 'mark' && e.label === label) out.push({ at, value: e.value as T });
    });
    return out;
  }

  /** How many flushes (of files) and folder flushes the model holds. */
  get barriers(): number {
    return this.events.filter((e) => (e.kind === 'flush' && !e.dropped) || e.kind === 'sync-folder').length;
  }

  private inside(path: string): string | undefined {
    const p = resolve(path);
    return p.startsWith(this.root + sep) ? p : undefined;
  }

  private onEvent(e: FileEvent): void {
    switch (e.kind) {
      case 'open': {
        const path = this.inside(e.path);
        if (!path) return;
        let inode = e.created ? undefined : this.names.get(path);
        if (inode === undefined) {
          inode = this.nextInode++;
          if (!e.created) {
            // A file made behind the model's back (not through FileSource or durable.ts): take it as it stands.
            this.initialContent.set(inode, new Uint8Array(readFileSync(path)));
          } else {
            this.events.push({ kind: 'link', folder: dirname(path), path, inode });
          }
          this.names.set(path, inode);
        }
        this.opens.set(e.file, { inode, path });
        return;
      }
      case 'write': {
        const f = this.opens.get(e.file);
        if (f) this.events.push({ kind: 'write', inode: f.inode, offset: e.offset, data: new Uint8Array(e.data) });
        return;
      }
      case 'truncate': {
        const f = this.opens.get(e.file);
        if (f) this.events.push({ kind: 'truncate', inode: f.inode, length: e.length });
        return;
      }
      case 'flush-start': {
        if (!this.opens.has(e.file)) return;
        const starts = this.flushStarts.get(e.file) ?? [];
        starts.push(this.events.length);
        this.flushStarts.set(e.file, starts);
        return;
      }
      case 'flush-done': {
        const f = this.opens.get(e.file);
        const since = this.flushStarts.get(e.file)?.shift();
        if (!f || since === undefined) return;
        const stack = callStack();
        const dropped = this.dropFlush?.({ path: f.path, stack }) ?? false;
        if (dropped) this.droppedFlushes++;
        // The times are read through a name the file has now: the name it was opened by may be gone
        // (a create publishes its staged file by a hard link, then removes the staged name).
        const named = existsSync(f.path) ? f.path : [...this.names].find(([, inode]) => inode === f.inode)?.[0];
        const times = dropped || named === undefined ? {} : { times: this.keepTimes(named, `flush-${this.events.length}`) };
        this.events.push({ kind: 'flush', inode: f.inode, since, dropped, where: stackSummary(stack), ...times });
        return;
      }
      case 'sync-file': {
        // Everything issued before it is durable, and so are the file's times.
        const path = this.inside(e.path);
        const inode = path === undefined ? undefined : this.names.get(path);
        if (inode === undefined) return;
        const dropped = this.dropFlush?.({ path: path!, stack: callStack() }) ?? false;
        if (dropped) this.droppedFlushes++;
        this.events.push({ kind: 'flush', inode, since: this.events.length, dropped, where: 'syncFile', ...(dropped ? {} : { times: this.keepTimes(path!, `sync-${this.events.length}`) }) });
        return;
      }
      case 'rename': {
        const from = this.inside(e.from);
        const to = this.inside(e.to);
        if (!from || !to) return;
        if (dirname(from) !== dirname(to)) throw new Error(`power-cut model: a rename across folders (${from} → ${to}) is not modelled`);
        // A file, or a folder: then every name under it moves with it (one entry of the parent folder changes).
        const moved = [...this.names].filter(([path]) => path === from || path.startsWith(from + sep));
        if (moved.length === 0) return;
        for (const [path] of moved) this.names.delete(path);
        for (const [path, inode] of moved) this.names.set(to + path.slice(from.length), inode);
        this.events.push({ kind: 'rename', folder: dirname(to), from, to });
        return;
      }
      case 'link': {
        const from = this.inside(e.from);
        const to = this.inside(e.to);
        const inode = from === undefined ? undefined : this.names.get(from);
        if (!to || inode === undefined) return;
        this.names.set(to, inode);
        this.events.push({ kind: 'link', folder: dirname(to), path: to, inode });
        return;
      }
      case 'written': {
        // Made by another process (QEMU): created and written, as far as the model knows, here.
        const path = this.inside(e.path);
        if (!path) return;
        const inode = this.nextInode++;
        this.events.push({ kind: 'link', folder: dirname(path), path, inode });
        this.events.push({ kind: 'write', inode, offset: 0, data: new Uint8Array(e.data) });
        this.names.set(path, inode);
        return;
      }
      case 'remove': {
        const path = this.inside(e.path);
        if (!path || !this.names.has(path)) return;
        this.names.delete(path);
        this.events.push({ kind: 'unlink', folder: dirname(path), path });
        return;
      }
      case 'sync-folder': {
        const folder = resolve(e.folder);
        if (folder === this.root || this.inside(folder)) this.events.push({ kind: 'sync-folder', folder });
        return;
      }
    }
  }
}

/** Records `op` under `root` (PowerCutRecorder.start, then stop however it ends). */
export async function recordOp(root: string, op: () => Promise<unknown>, dropFlush?: FlushFilter): Promise<PowerCutRecorder> {
  const rec = PowerCutRecorder.start(root, dropFlush);
  try {
    await op();
  } finally {
    rec.stop();
  }
  return rec;
}

/** The call stack here, async frames included, deep enough to reach the product's caller. */
function callStack(): string {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 40;
  const stack = new Error().stack ?? '';
  Error.stackTraceLimit = limit;
  return stack;
}

/** The frames of a flush's call stack that name our code, innermost first, for messages. */
function stackSummary(stack: string): string {
  return stack
    .split('\n')
    .slice(1)
    .map((l) => /at (?:async )?([\w.<>]+) /.exec(l)?.[1])
    .filter((f): f is string => !!f && !f.startsWith('PowerCutRecorder') && !f.startsWith('FileSource') && f !== 'Object.flush' && f !== 'callStack')
    .slice(0, 4)
    .join(' < ');
}

function listFiles(folder: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(folder)) {
    const p = join(folder, name);
    if (statSync(p).isDirectory()) out.push(...listFiles(p));
    else out.push(p);
  }
  return out;
}
