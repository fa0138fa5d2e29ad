/**
 * Live removal case of npm run bench (BENCH_ONLY=vm or vm-remove): removing a middle checkpoint of
 * the running test guest, whose layer of a data disk holds MERGED_MIB of random data that merges into
 * the base while the guest's counter ticks on disk0 (runtime/live-remove.ts: the engine's merge, Now's
 * leaf handed over through the served handle, the export re-chained), against the peer: `qemu-img
 * commit -t writeback` of the same data as a qcow2 overlay into its base with the VM off (what a
 * QEMU user would run; there is no live peer for a VHDX chain). Each run builds its own tree
 * (A ← B ← Now, B's layer the merged data) and boots the guest; the removal is timed from the call
 * to its answer, the peer from its start to its exit. Medians of BENCH_RUNS (at most 3: a boot each).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { removeVm } from '../src/api/vm-remove.js';
import { startVm, stopVm } from '../src/api/vm-runtime.js';
import { createVm, withVm } from '../src/api/vm.js';
import { buildGuest, SerialLog, type GuestImage } from '../test/helpers/guest.js';
import type { VmBench } from './vm.js';

const MIB = 1 << 20;
const DISK_MIB = 512;
const BASE_MIB = 256;
const MERGED_MIB = 256;

export async function runLiveRemoveCase(b: VmBench): Promise<void> {
  const image = await buildGuest().catch(() => undefined);
  if (!image) {
    console.log('vm live removal: skipped, the test guest cannot be built');
    return;
  }
  const ours: number[] = [];
  const theirs: number[] = [];
  for (let i = 0; i < Math.min(b.runs, 3); i++) {
    const dir = join(b.dir, `vm-remove-${process.pid}-${i}`);
    mkdirSync(dir, { recursive: true });
    try {
      ours.push(await liveRemoval(dir, image));
      theirs.push(qemuImgCommit(dir));
    } finally {
      await stopVm(join(dir, 'vm'), { force: true }).catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const [o, t] = [b.median(ours), b.median(theirs)];
  console.log(`vm live removal of a middle checkpoint (${MERGED_MIB} MiB merged while the guest runs): ${o.toFixed(2)}s; qemu-img commit of the same data (qcow2, VM off) ${t.toFixed(2)}s; ratio ${(o / t).toFixed(2)} (median of ${ours.length})`);
}

/** The tree, the boot, then the timed removal of A (B's layer merges into A's: the middle case). */
async function liveRemoval(dir: string, image: GuestImage): Promise<number> {
  const folder = join(dir, 'vm');
  await createVm(folder, {
    newDisks: [{ size: MIB }, { size: 16 * MIB }, { size: DISK_MIB * MIB }],
    memoryBytes: 256 * MIB,
    checkpointType: 'standard',
    settings: { boot: { kind: 'kernel', kernel: image.kernel, initrd: image.initrd, append: 'console=ttyS0 panic=-1' }, freeSpaceReserveBytes: 0 },
  });
  const base = randomBytes(BASE_MIB * MIB);
  const merged = randomBytes(MERGED_MIB * MIB);
  const mergedAt = (DISK_MIB - MERGED_MIB) * MIB;
  await withVm(folder, { command: 'bench' }, async (vm) => {
    for (const [name, data, at] of [['A', base, 0], ['B', merged, mergedAt]] as const) {
      const chain = await vm.openDisk('disk2', { writable: true });
      try {
        await chain.write(data, at);
        await chain.flush();
      } finally {
        await chain.close();
      }
      await vm.checkpoint({ name });
    }
  });
  // The peer's copy of the same data: a qcow2 base and an overlay holding the merged range.
  const raw = (name: string, parts: Array<[Uint8Array, number]>): string => {
    const path = join(dir, name);
    const fd = openSync(path, 'w');
    for (const [data, at] of parts) writeSync(fd, data, 0, data.length, at);
    closeSync(fd);
    execFileSync('truncate', ['-s', String(DISK_MIB * MIB), path]);
    return path;
  };
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw('base.raw', [[base, 0]]), join(dir, 'base.qcow2')]);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-B', join(dir, 'base.qcow2'), '-F', 'qcow2', raw('top.raw', [[base, 0], [merged, mergedAt]]), join(dir, 'top.qcow2')]);
  rmSync(join(dir, 'base.raw'));
  rmSync(join(dir, 'top.raw'));
  await startVm(folder);
  await new SerialLog(join(folder, 'run', 'serial.log')).waitFor(/diskchain-guest: ready/, 120_000);
  const t0 = performance.now();
  const r = await removeVm(folder, 'A');
  const seconds = (performance.now() - t0) / 1000;
  const copied = r.merged.reduce((s, m) => s + m.bytesCopied, 0);
  if (copied < MERGED_MIB * MIB) throw new Error(`the live removal copied ${copied} bytes, expected at least ${MERGED_MIB} MiB`);
  await stopVm(folder, { force: true });
  return seconds;
}

function qemuImgCommit(dir: string): number {
  const t0 = performance.now();
  execFileSync('qemu-img', ['commit', '-t', 'writeback', join(dir, 'top.qcow2')]);
  return (performance.now() - t0) / 1000;
}
