/**
 * Checkpoint-tree cases of npm run bench (BENCH_ONLY=checkpoints):
 *  - checkpoint create and apply on a VM with four 1 TiB sparse disks, timed in-process (the library
 *    call, as a script or the console makes it) and through the CLI, against the same VM with four
 *    1 GiB disks: the ratio shows whether the time depends on the disks' size (it should not: a
 *    checkpoint writes only each new child's headers and an empty BAT);
 *  - removal of a checkpoint whose child holds BENCH_SIZE_MIB of changes (its layer merges with that
 *    child: every changed byte is read and written into the layer, flushed, the child deleted), against
 *    qemu-img commit -t writeback of the same data in a qcow2 chain (the same durable work), both as
 *    processes. Each run starts from a pristine copy of the VM folder (restored, not timed).
 */
import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, cpSync, mkdirSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createVm, openVm } from '../src/api/vm.js';
import type { Measure } from './merge.js';

export interface CheckpointBench {
  dir: string;
  cli: string;
  runs: number;
  sizeMiB: number;
  /** The raw base data (BENCH_SIZE_MIB long). */
  source: string;
  measure: (cmd: string[]) => Measure;
  median: (xs: number[]) => number;
}

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const TIB = 1024 * GIB;

interface Timing {
  create: number[];
  apply: number[];
  cliCreate: number[];
  cliApply: number[];
}

/** One round on `folder`: create and apply (discarding Now) in-process (ms), then both through the CLI (s). */
async function round(b: CheckpointBench, folder: string, i: number, into?: Timing): Promise<void> {
  const vm = await openVm(folder);
  try {
    let t = performance.now();
    const c = await vm.checkpoint({ name: `c${i}` });
    const created = performance.now() - t;
    t = performance.now();
    await vm.apply(c.id);
    into?.apply.push(performance.now() - t);
    into?.create.push(created);
  } finally {
    await vm.close();
  }
  const cliCreate = b.measure(['node', b.cli, 'checkpoint', 'create', folder, '--name', `k${i}`]).seconds;
  const cliApply = b.measure(['node', b.cli, 'checkpoint', 'apply', folder, `k${i}`]).seconds;
  into?.cliCreate.push(cliCreate);
  into?.cliApply.push(cliApply);
}

/** Four disks of 1 TiB against four of 1 GiB, rounds alternating between the two VMs after a warm-up round each. */
async function createApply(b: CheckpointBench): Promise<Array<{ create: number; apply: number; cliCreate: number; cliApply: number }>> {
  const sizes = [TIB, GIB];
  const folders = sizes.map((size) => join(b.dir, `vm-${size}`));
  const timings: Timing[] = sizes.map(() => ({ create: [], apply: [], cliCreate: [], cliApply: [] }));
  for (const [k, folder] of folders.entries()) {
    rmSync(folder, { recursive: true, force: true });
    await createVm(folder, { newDisks: [0, 1, 2, 3].map(() => ({ size: sizes[k]! })) });
    await round(b, folder, -1);
  }
  for (let i = 0; i < b.runs; i++) for (const [k, folder] of folders.entries()) await round(b, folder, i, timings[k]);
  for (const folder of folders) rmSync(folder, { recursive: true, force: true });
  return timings.map((t) => ({ create: b.median(t.create), apply: b.median(t.apply), cliCreate: b.median(t.cliCreate), cliApply: b.median(t.cliApply) }));
}

/** Writes `file` (raw) into the VM's Now disk from offset 0. */
async function writeFrom(folder: string, file: string, length: number): Promise<void> {
  const vm = await openVm(folder);
  const fd = openSync(file, 'r');
  try {
    const disk = await vm.openDisk('disk0', { writable: true });
    const chunk = Buffer.alloc(4 * MIB);
    for (let at = 0; at < length; at += chunk.length) {
      const n = readSync(fd, chunk, 0, chunk.length, at);
      await disk.write(chunk.subarray(0, n), at);
    }
    await disk.close();
  } finally {
    closeSync(fd);
    await vm.close();
  }
}

export async function runCheckpointCases(b: CheckpointBench): Promise<void> {
  const [big, small] = (await createApply(b)) as [Awaited<ReturnType<typeof createApply>>[number], Awaited<ReturnType<typeof createApply>>[number]];
  console.log(
    `checkpoint create, 4 x 1 TiB: ${big.create.toFixed(1)} ms in-process (4 x 1 GiB: ${small.create.toFixed(1)} ms, ratio ${(big.create / small.create).toFixed(2)}); ` +
      `CLI ${(big.cliCreate * 1000).toFixed(0)} ms (1 GiB: ${(small.cliCreate * 1000).toFixed(0)} ms)`,
  );
  console.log(
    `checkpoint apply,  4 x 1 TiB: ${big.apply.toFixed(1)} ms in-process (4 x 1 GiB: ${small.apply.toFixed(1)} ms, ratio ${(big.apply / small.apply).toFixed(2)}); ` +
      `CLI ${(big.cliApply * 1000).toFixed(0)} ms (1 GiB: ${(small.cliApply * 1000).toFixed(0)} ms)`,
  );

  // Removal: base (the source data) frozen by A; the changes written into Now, frozen by B. Removing A
  // merges B's layer (all the changes) into the base, as qemu-img commit merges top into base.
  const changed = join(b.dir, 'vm-changed.raw');
  const fd = openSync(changed, 'w');
  const chunk = Buffer.alloc(4 * MIB);
  for (let i = 0; i < b.sizeMiB / 4; i++) {
    // Random: no run of zeros either tool could skip.
    randomFillSync(chunk);
    writeSync(fd, chunk);
  }
  closeSync(fd);
  const pristine = join(b.dir, 'vm-remove-pristine');
  const work = join(b.dir, 'vm-remove');
  rmSync(pristine, { recursive: true, force: true });
  await createVm(pristine, { newDisks: [{ size: b.sizeMiB * MIB }] });
  await writeFrom(pristine, b.source, b.sizeMiB * MIB);
  let vm = await openVm(pristine);
  await vm.checkpoint({ name: 'A' });
  await vm.close();
  await writeFrom(pristine, changed, b.sizeMiB * MIB);
  vm = await openVm(pristine);
  await vm.checkpoint({ name: 'B' });
  await vm.close();
  const qdir = join(b.dir, 'vm-qcow2');
  const qpristine = join(b.dir, 'vm-qcow2-pristine');
  for (const d of [qdir, qpristine]) rmSync(d, { recursive: true, force: true });
  mkdirSync(qpristine, { recursive: true });
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', b.source, join(qpristine, 'base.qcow2')]);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-B', 'base.qcow2', '-F', 'qcow2', changed, join(qpristine, 'top.qcow2')], { cwd: qpristine });
  const ours: number[] = [];
  const theirs: number[] = [];
  for (let i = 0; i < b.runs; i++) {
    rmSync(work, { recursive: true, force: true });
    cpSync(pristine, work, { recursive: true });
    ours.push(b.measure(['node', b.cli, 'checkpoint', 'remove', work, 'A']).seconds);
    rmSync(qdir, { recursive: true, force: true });
    cpSync(qpristine, qdir, { recursive: true });
    theirs.push(b.measure(['qemu-img', 'commit', '-t', 'writeback', join(qdir, 'top.qcow2')]).seconds);
  }
  // The removal did the work: B now reads the changes from a single file.
  const check = await openVm(work, { lock: 'read' });
  const layers = check.manifest.nodes.length;
  await check.close();
  const t = b.median(ours);
  const q = b.median(theirs);
  console.log(`checkpoint remove (${b.sizeMiB} MiB of changes merged) median: diskchain ${t.toFixed(2)}s qemu-img commit ${q.toFixed(2)}s ratio ${(t / q).toFixed(2)} (layers left: ${layers})`);
  for (const d of [pristine, work, qdir, qpristine, changed]) rmSync(d, { recursive: true, force: true });
}
