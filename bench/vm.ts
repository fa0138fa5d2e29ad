/**
 * Running-VM cases of npm run bench (BENCH_ONLY=vm): the test guest (scripts/build-guest.sh) on QEMU
 * under its diskchain worker, with four disks: disk0 (the guest's counter), disk2 and disk3 256 GiB
 * dynamic VHDX (large and sparse), disk1 16 MiB (the ext2 the guest agent freezes; a larger one
 * would take minutes to format under TCG).
 *  - production checkpoints: the guest's pause (QMP stop to cont; the target is under 50 ms) against
 *    the floor of the same run, QMP stop + cont alone; the freeze around it;
 *  - standard checkpoints: the pause, dominated by writing the memory state, against that write alone;
 *  - apply of a standard checkpoint to the running VM (QEMU replaced, state restored): wall time;
 *  - group production checkpoints of that VM and a second running guest (one 1 MiB and one 16 MiB
 *    disk): the longest pause of the two guests against the single production checkpoint's pause.
 * Medians of BENCH_RUNS (at most 5); the phases of the median pause are printed.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { applyVm, checkpointVm, startVm, stopVm, type CheckpointVmResult } from '../src/api/vm-runtime.js';
import { createVm, groupCheckpoint } from '../src/api/vm.js';
import { buildGuest, SerialLog } from '../test/helpers/guest.js';

export interface VmBench {
  dir: string;
  runs: number;
  median: (xs: number[]) => number;
}

const GIB = 1024 ** 3;
const PRODUCTION_TARGET_MS = 50;

const fmt = (ms: number): string => `${ms.toFixed(1)} ms`;

export async function runVmCases(b: VmBench): Promise<void> {
  const image = await buildGuest().catch((e: unknown) => {
    console.log(`vm: skipped, the test guest cannot be built: ${String(e)}`);
    return undefined;
  });
  if (!image) return;
  const runs = Math.min(b.runs, 5);
  const folder = join(b.dir, `vm-bench-${process.pid}`);
  const second = join(b.dir, `vm-bench-${process.pid}-b`);
  const settings = { boot: { kind: 'kernel' as const, kernel: image.kernel, initrd: image.initrd, append: 'console=ttyS0 panic=-1' }, freeSpaceReserveBytes: 0 };
  await createVm(folder, { newDisks: [{ size: 256 * GIB }, { size: 16 << 20 }, { size: 256 * GIB }, { size: 256 * GIB }], memoryBytes: 256 << 20, checkpointType: 'production', settings });
  await createVm(second, { newDisks: [{ size: 1 << 20 }, { size: 16 << 20 }], memoryBytes: 256 << 20, checkpointType: 'production', settings });
  try {
    await Promise.all([startVm(folder), startVm(second)]);
    for (const f of [folder, second]) await new SerialLog(join(f, 'run', 'serial.log')).waitFor(/diskchain-guest: ready .* agent=yes/, 120_000);
    const report = (label: string, rs: CheckpointVmResult[], floorOf: (r: CheckpointVmResult) => number, floorName: string, target?: number): void => {
      const pauses = rs.map((r) => r.pauseMs);
      const m = b.median(pauses);
      const mid = rs.find((r) => r.pauseMs === m)!;
      const floor = b.median(rs.map(floorOf));
      console.log(`vm ${label}: guest paused ${fmt(m)} (median of ${rs.length}; min ${fmt(Math.min(...pauses))}, max ${fmt(Math.max(...pauses))}); ${floorName} ${fmt(floor)}; ratio ${(m / floor).toFixed(2)}${target !== undefined ? `; target < ${target} ms: ${m < target ? 'met' : 'NOT met'}` : ''}`);
      console.log(`    phases of the median: ${Object.entries(mid.phases).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}${mid.frozenMs !== null ? `; frozen ${fmt(mid.frozenMs)}` : ''}${mid.stateBytes !== null ? `; state ${(mid.stateBytes / 2 ** 20).toFixed(1)} MiB` : ''}`);
    };
    const production: CheckpointVmResult[] = [];
    for (let i = 0; i < runs; i++) {
      production.push(await checkpointVm(folder, { name: `bench production ${i}` }));
      await sleep(500);
    }
    report('production checkpoint (4 disks, 3 of 256 GiB)', production, (r) => (r.phases.stop ?? 0) + (r.phases.cont ?? 0), 'QMP stop + cont alone', PRODUCTION_TARGET_MS);
    const standard: CheckpointVmResult[] = [];
    for (let i = 0; i < runs; i++) {
      standard.push(await checkpointVm(folder, { name: `bench standard ${i}`, type: 'standard' }));
      await sleep(500);
    }
    report('standard checkpoint (256 MiB guest)', standard, (r) => r.phases.state ?? 0, 'the memory state written alone');
    const groups: number[] = [];
    for (let i = 0; i < runs; i++) {
      groups.push((await groupCheckpoint([folder, second], { name: `bench group ${i}`, type: 'production' })).pauseMs!);
      await sleep(500);
    }
    const single = b.median(production.map((r) => r.pauseMs));
    console.log(`vm group production checkpoint of 2 running VMs: longest guest pause ${fmt(b.median(groups))} (median of ${runs}; min ${fmt(Math.min(...groups))}, max ${fmt(Math.max(...groups))}); a single production checkpoint ${fmt(single)}; ratio ${(b.median(groups) / single).toFixed(2)}`);
    await stopVm(second, { force: true });
    const applies: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await applyVm(folder, standard[i % standard.length]!.checkpoint.id);
      applies.push(performance.now() - t0);
      await sleep(500);
    }
    const stdPause = b.median(standard.map((r) => r.pauseMs));
    console.log(`vm apply of a standard checkpoint to the running VM: ${fmt(b.median(applies))} (median of ${runs}: QEMU replaced, the state restored, the guest running); ratio to the standard checkpoint's pause ${(b.median(applies) / stdPause).toFixed(2)}`);
    await stopVm(folder, { force: true });
  } finally {
    const { rm } = await import('node:fs/promises');
    for (const f of [folder, second]) {
      await stopVm(f, { force: true }).catch(() => undefined);
      await rm(f, { recursive: true, force: true });
    }
  }
}
