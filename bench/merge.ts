/**
 * Merge cases of npm run bench: merging a differencing child that holds BENCH_SIZE_MIB of changed data
 * into its parent, against
 *  - qemu-img commit of the equivalent qcow2 chain (the peer), with -t writeback so that it flushes its
 *    writes, as diskchain merge does (qemu-img commit's default is also writeback; it is spelled out
 *    so the like-for-like setting does not depend on a default), and
 *  - cp of the same bytes (the physical limit): a merge has to read every changed byte from the child
 *    and write it into the parent, and `cp --sparse=never` of a raw file holding the same data does
 *    exactly that read + write and nothing else (no format metadata, no journal). --sparse=never
 *    makes it write every byte even where a run of zeros could be skipped, as the merge writes every
 *    byte the child holds; `sync FILE` (fsync) after it stands for diskchain's flushes, so all three
 *    end with the data durable. cp leaves its source in place, while both merges also drop the merged
 *    layer (diskchain unlinks the child, qemu-img commit truncates the emptied overlay), which frees
 *    the child's pages; on tmpfs that alone is a few tenths of a second per GiB, part of the "vs cp" ratio.
 * Every run starts from the same untouched pair (restored, not timed) and each tool runs in turn.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export interface Measure {
  seconds: number;
  maxRssMiB: number;
}

export interface MergeBench {
  /** The bench folder (tmpfs, or a folder on the project's disk). */
  dir: string;
  /** dist/bin/diskchain.js */
  cli: string;
  runs: number;
  sizeMiB: number;
  /** The raw base data (75% random, 25% holes), BENCH_SIZE_MIB long. */
  source: string;
  /** Keep the files (BENCH_KEEP=1). */
  keep: boolean;
  measure: (cmd: string[]) => Measure;
  median: (xs: number[]) => number;
}

/** The target: diskchain merge within this factor of qemu-img commit. */
const TARGET_RATIO = 1.5;

interface Pair {
  base: string;
  child: string;
}

/**
 * A pair is built once through the tools' own commands, then copied aside ("pristine"); each run
 * copies it back byte for byte. That is the same pair a rebuild would give (a rebuild differs only
 * in fresh GUIDs) for about a second instead of the ~10 s `diskchain write` of 1 GiB takes.
 * The pristine copies live in a sibling folder: merge looks through the child's folder for other
 * disks that depend on the parent, and would (rightly) refuse to merge with a second child there.
 */
function restore(pristine: string, pair: Pair): void {
  for (const path of [pair.base, pair.child]) {
    rmSync(path, { force: true });
    copyFileSync(join(pristine, path.split('/').pop()!), path);
  }
}

function keepPristine(pristine: string, pair: Pair): void {
  rmSync(pristine, { recursive: true, force: true });
  mkdirSync(pristine, { recursive: true });
  for (const path of [pair.base, pair.child]) copyFileSync(path, join(pristine, path.split('/').pop()!));
}

function makeChanged(path: string, sizeMiB: number): void {
  // Random data: no run of zeros a tool could skip, so every tool moves all of it.
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < sizeMiB / 4; i++) {
    randomFillSync(chunk);
    writeSync(fd, chunk);
  }
  closeSync(fd);
}

export function runMergeCases(b: MergeBench): void {
  const changed = join(b.dir, 'changed.raw');
  if (!existsSync(changed)) makeChanged(changed, b.sizeMiB);

  // The peer's chain: the same base data in a qcow2 base (converted, so holes stay holes, as in
  // ours), and an overlay holding the changed data. convert -B writes every cluster the raw source
  // has into the new overlay, which is all of it (random data), in one pass.
  const qdir = join(b.dir, 'merge-qcow2');
  const qpristine = join(b.dir, 'merge-qcow2-pristine');
  rmSync(qdir, { recursive: true, force: true });
  mkdirSync(qdir, { recursive: true });
  const q: Pair = { base: join(qdir, 'base.qcow2'), child: join(qdir, 'top.qcow2') };
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', b.source, q.base]);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-B', q.base, '-F', 'qcow2', changed, q.child]);
  keepPristine(qpristine, q);

  const cdir = join(b.dir, 'merge-cp');
  mkdirSync(cdir, { recursive: true });
  const copy = join(cdir, 'copy.raw');

  for (const format of ['vhdx', 'vhd'] as const) {
    const wdir = join(b.dir, `merge-${format}`);
    const pristine = join(b.dir, `merge-${format}-pristine`);
    rmSync(wdir, { recursive: true, force: true });
    mkdirSync(wdir, { recursive: true });
    const pair: Pair = { base: join(wdir, `base.${format}`), child: join(wdir, `child.a${format}`) };
    // The base is the source converted (holes stay holes, like the qcow2 base); the child is a
    // differencing disk over it with the changed data written from offset 0, all through the CLI.
    execFileSync('node', [b.cli, 'convert', b.source, pair.base, '-f', 'raw', '-O', format]);
    execFileSync('node', [b.cli, 'create', pair.child, '--parent', pair.base]);
    execFileSync('node', [b.cli, 'write', pair.child, '--offset', '0', '--input', changed]);
    keepPristine(pristine, pair);

    const ours: Measure[] = [];
    const theirs: Measure[] = [];
    const limit: Measure[] = [];
    let verdict = '';
    for (let i = 0; i < b.runs; i++) {
      restore(pristine, pair);
      ours.push(b.measure(['node', b.cli, 'merge', pair.child]));
      restore(qpristine, q);
      theirs.push(b.measure(['qemu-img', 'commit', '-t', 'writeback', q.child]));
      rmSync(copy, { force: true });
      limit.push(b.measure(['sh', '-c', 'cp --sparse=never "$1" "$2" && sync "$2"', 'sh', changed, copy]));
      if (i === 0) verdict = checkMerged(b, pair, q, changed, wdir);
    }
    rmSync(copy, { force: true });

    const t = b.median(ours.map((m) => m.seconds));
    const qc = b.median(theirs.map((m) => m.seconds));
    const cp = b.median(limit.map((m) => m.seconds));
    const best = (ms: Measure[]): number => Math.min(...ms.map((m) => m.seconds));
    const peak = (ms: Measure[]): string => Math.max(...ms.map((m) => m.maxRssMiB)).toFixed(0);
    const name = `merge .a${format} -> .${format}`;
    const ratio = (t / qc).toFixed(2);
    console.log(
      `${name.padEnd(22)} median: diskchain ${t.toFixed(2)}s qemu-img commit ${qc.toFixed(2)}s cp ${cp.toFixed(2)}s ratio ${ratio} ` +
        `(target <= ${TARGET_RATIO}: ${Number(ratio) <= TARGET_RATIO ? 'met' : 'MISSED'}) (vs cp ${(t / cp).toFixed(2)}; qemu-img vs cp ${(qc / cp).toFixed(2)}) | ` +
        `best: ratio ${(best(ours) / best(theirs)).toFixed(2)} (vs cp ${(best(ours) / best(limit)).toFixed(2)}) | ` +
        `peak memory ${peak(ours)} MiB vs ${peak(theirs)} MiB (cp ${peak(limit)} MiB)  ${verdict}`,
    );
    if (!b.keep) {
      rmSync(wdir, { recursive: true, force: true });
      rmSync(pristine, { recursive: true, force: true });
    }
  }
  if (!b.keep) {
    for (const path of [qdir, qpristine, cdir, changed]) rmSync(path, { recursive: true, force: true });
  }
}

/**
 * After a run of both tools: the merged base must read exactly the changed data (the child covers
 * the whole disk), the same as qemu-img commit's base, the child must be gone, and the base must
 * pass diskchain check.
 */
function checkMerged(b: MergeBench, pair: Pair, q: Pair, changed: string, wdir: string): string {
  const problems: string[] = [];
  if (existsSync(pair.child)) problems.push('child not removed');
  if (spawnSync('node', [b.cli, 'check', pair.base]).status !== 0) problems.push('base fails check');
  const merged = join(wdir, 'merged.raw');
  execFileSync('node', [b.cli, 'read', pair.base, '-o', merged]);
  if (spawnSync('cmp', ['-s', merged, changed]).status !== 0) problems.push('merged base DIFFERS from the expected data');
  if (spawnSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'qcow2', merged, q.base]).status !== 0) problems.push("merged base DIFFERS from qemu-img commit's");
  rmSync(merged, { force: true });
  return problems.length ? problems.join(', ') : "merged base identical to the expected data and to qemu-img commit's";
}
