/**
 * npm run bench: diskchain against qemu-img on the same work in the same run.
 * Each case runs both tools alternately (sync before each run), reports the median time, the ratio
 * diskchain / qemu-img and the peak memory (max RSS) of each, and checks both outputs are identical.
 * qemu-img's convert does not flush its output by default; "-t writeback" makes it flush, as diskchain
 * does, so that is the like-for-like ratio; the default one is shown too.
 * Everything runs twice, in two places:
 *  - tmpfs (/dev/shm): flushes cost nothing and nothing waits for a device, so a 1 GiB job is pure
 *    memory copying, about 0.4 s for qemu-img; a fixed cost such as Node's start-up weighs most here;
 *  - the disk the project is on (.bench-work/ in the repository): what a user converting a disk sees.
 * The raw -> raw case adds the Node floor (bench/floor-copy.ts): the plainest Node copy of the same
 * bytes, no format work. Its ratio to qemu-img is what any Node program pays before doing anything.
 * Then the merge cases (bench/merge.ts): diskchain merge of a child holding BENCH_SIZE_MIB of changed
 * data into its parent, against qemu-img commit of the same qcow2 chain and against cp of the same bytes.
 * Then the NBD cases (bench/nbd.ts): diskchain serve against qemu-nbd on the same dynamic VHDX, with
 * qemu-img convert and fio's random 4 KiB reads as the clients.
 * BENCH_DIRS (comma-separated) replaces the two places; BENCH_RUNS and BENCH_SIZE_MIB set the size;
 * Then the running-VM cases (bench/vm.ts): the guest's pause for production and standard checkpoints, apply time;
 * and a live removal against qemu-img commit of the same data (bench/vm-remove.ts, also BENCH_ONLY=vm-remove).
 * Then the checkpoint-tree cases (bench/checkpoints.ts): checkpoint create and apply on four 1 TiB sparse
 * disks against four 1 GiB ones, and a checkpoint removal merging BENCH_SIZE_MIB of changes against
 * qemu-img commit of the same data.
 * BENCH_ONLY (convert, merge, nbd, vm or checkpoints, comma-separated) runs some groups only.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, rmSync, statfsSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { runMergeCases, type Measure } from './merge.js';
import { runNbdCases } from './nbd.js';
import { runVmCases } from './vm.js';
import { runLiveRemoveCase } from './vm-remove.js';
import { runCheckpointCases } from './checkpoints.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const SIZE_MIB = Number(process.env.BENCH_SIZE_MIB ?? 1024);
const CLI = new URL('../bin/diskchain.js', import.meta.url).pathname;
const FLOOR = new URL('./floor-copy.js', import.meta.url).pathname;
const REPO = new URL('../../', import.meta.url).pathname;
const DIRS = process.env.BENCH_DIRS
  ? process.env.BENCH_DIRS.split(',')
  : [...(existsSync('/dev/shm') ? [join('/dev/shm', 'diskchain-bench')] : []), join(REPO, '.bench-work')];
/** Sources, outputs and merge pairs together stay under this many times the disk size. */
const SPACE_FACTOR = 8;

/** Runs a command and reports wall time and the child's peak RSS (through Python's rusage). */
function measure(cmd: string[]): Measure {
  execFileSync('sync');
  const script = 'import resource,subprocess,sys,time\nt=time.perf_counter()\nsubprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL)\nprint(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)';
  const out = execFileSync('/usr/bin/python3', ['-c', script, ...cmd], { encoding: 'utf8' }).trim().split(' ');
  return { seconds: Number(out[0]), maxRssMiB: Number(out[1]) / 1024 };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

interface Case {
  name: string;
  output: string;
  diskchain: string[];
  qemu: string[];
  compareFormat: string;
  /** The Node floor's command for the same copy (raw -> raw only). */
  floor?: string[];
}

function runCase(c: Case): void {
  const ours: Measure[] = [];
  const theirs: Measure[] = [];
  const theirsDefault: Measure[] = [];
  const floor: Measure[] = [];
  const qemuOut = `${c.output}.qemu`;
  const steps: Array<() => void> = [
    () => {
      rmSync(c.output, { force: true });
      ours.push(measure(['node', CLI, ...c.diskchain, c.output]));
    },
    () => {
      rmSync(qemuOut, { force: true });
      theirs.push(measure(['qemu-img', 'convert', '-t', 'writeback', ...c.qemu, qemuOut]));
    },
    () => {
      rmSync(qemuOut, { force: true });
      theirsDefault.push(measure(['qemu-img', 'convert', ...c.qemu, qemuOut]));
    },
  ];
  const floorArgs = c.floor;
  if (floorArgs) {
    steps.push(() => {
      rmSync(`${c.output}.floor`, { force: true });
      floor.push(measure(['node', FLOOR, ...floorArgs, `${c.output}.floor`]));
    });
  }
  // The order turns every round, so no tool always runs right after the same other one (on a VM,
  // memory a run frees and the next takes can be slow or fast to fault in).
  for (let i = 0; i < RUNS; i++) {
    for (let k = 0; k < steps.length; k++) steps[(i + k) % steps.length]!();
  }
  rmSync(`${c.output}.floor`, { force: true });
  const same = spawnSync('qemu-img', ['compare', '-f', c.compareFormat, '-F', c.compareFormat, c.output, qemuOut]).status === 0;
  const t = median(ours.map((m) => m.seconds));
  const q = median(theirs.map((m) => m.seconds));
  const qd = median(theirsDefault.map((m) => m.seconds));
  const best = (ms: Measure[]): number => Math.min(...ms.map((m) => m.seconds));
  console.log(
    `${c.name.padEnd(22)} median: diskchain ${t.toFixed(2)}s qemu-img ${q.toFixed(2)}s (default ${qd.toFixed(2)}s) ratio ${(t / q).toFixed(2)} (vs default ${(t / qd).toFixed(2)}) | ` +
      `best: ratio ${(best(ours) / best(theirs)).toFixed(2)} (vs default ${(best(ours) / best(theirsDefault)).toFixed(2)}) | ` +
      `peak memory ${Math.max(...ours.map((m) => m.maxRssMiB)).toFixed(0)} MiB vs ${Math.max(...theirs.map((m) => m.maxRssMiB)).toFixed(0)} MiB  ` +
      `outputs ${same ? 'identical' : 'DIFFER'}`,
  );
  if (c.floor) {
    const f = median(floor.map((m) => m.seconds));
    console.log(`${'  Node floor'.padEnd(22)} median: ${f.toFixed(2)}s ratio to qemu-img ${(f / q).toFixed(2)} (best ${(best(floor) / best(theirs)).toFixed(2)}); diskchain / floor ${(t / f).toFixed(2)}`);
  }
  rmSync(c.output, { force: true });
  rmSync(qemuOut, { force: true });
}

function makeSource(path: string): void {
  // Three chunks of random data for every chunk of zeros: a disk that is mostly full, with holes.
  const fd = openSync(path, 'w');
  const chunk = Buffer.alloc(4 * 1024 * 1024);
  for (let i = 0; i < SIZE_MIB / 4; i++) {
    if (i % 4 === 3) chunk.fill(0);
    else randomFillSync(chunk);
    writeSync(fd, chunk);
  }
  closeSync(fd);
}

if (spawnSync('qemu-img', ['--version']).status !== 0) {
  console.error('npm run bench needs qemu-img (apt-get install qemu-utils)');
  process.exit(1);
}

const ONLY = process.env.BENCH_ONLY?.split(',');
const wanted = (group: string): boolean => !ONLY || ONLY.includes(group);

async function runIn(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const fs = statfsSync(dir);
  const free = fs.bavail * fs.bsize;
  if (free < SPACE_FACTOR * SIZE_MIB * 1024 * 1024) {
    console.log(`skipped ${dir}: ${(free / 2 ** 30).toFixed(1)} GiB free, the bench needs ${(SPACE_FACTOR * SIZE_MIB) / 1024} GiB`);
    return;
  }
  const raw = join(dir, 'source.raw');
  if (!existsSync(raw)) makeSource(raw);
  const vhdx = join(dir, 'source.vhdx');
  const vhd = join(dir, 'source.vhd');
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', raw, vhdx]);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', raw, vhd]);
  console.log(`\ndiskchain bench: ${SIZE_MIB} MiB disks (75% random data, 25% holes), median and best of ${RUNS} runs, in ${dir}`);
  const cases: Case[] = [
    { name: 'dynamic VHDX -> raw', output: join(dir, 'out.raw'), diskchain: ['convert', vhdx, '-O', 'raw'], qemu: ['-f', 'vhdx', '-O', 'raw', vhdx], compareFormat: 'raw' },
    { name: 'raw -> dynamic VHDX', output: join(dir, 'out.vhdx'), diskchain: ['convert', raw, '-f', 'raw', '-O', 'vhdx'], qemu: ['-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', raw], compareFormat: 'vhdx' },
    { name: 'dynamic VHD -> raw', output: join(dir, 'out2.raw'), diskchain: ['convert', vhd, '-O', 'raw'], qemu: ['-f', 'vpc', '-O', 'raw', vhd], compareFormat: 'raw' },
    { name: 'raw -> dynamic VHD', output: join(dir, 'out.vhd'), diskchain: ['convert', raw, '-f', 'raw', '-O', 'vhd'], qemu: ['-f', 'raw', '-O', 'vpc', '-o', 'subformat=dynamic,force_size=on', raw], compareFormat: 'vpc' },
    { name: 'raw -> raw', output: join(dir, 'out3.raw'), diskchain: ['convert', raw, '-f', 'raw', '-O', 'raw'], qemu: ['-f', 'raw', '-O', 'raw', raw], compareFormat: 'raw', floor: [raw] },
  ];
  if (wanted('convert')) for (const c of cases) runCase(c);
  if (wanted('merge')) runMergeCases({ dir, cli: CLI, runs: RUNS, sizeMiB: SIZE_MIB, source: raw, keep: process.env.BENCH_KEEP === '1', measure, median });
  if (wanted('nbd')) await runNbdCases({ dir, cli: CLI, runs: RUNS, sizeMiB: SIZE_MIB, vhdx, measure, median });
  if (wanted('vm')) await runVmCases({ dir, runs: RUNS, median });
  if (wanted('vm') || wanted('vm-remove')) await runLiveRemoveCase({ dir, runs: RUNS, median });
  if (wanted('checkpoints')) await runCheckpointCases({ dir, cli: CLI, runs: RUNS, sizeMiB: SIZE_MIB, source: raw, measure, median });
  if (process.env.BENCH_KEEP !== '1') rmSync(dir, { recursive: true, force: true });
}

for (const dir of DIRS) await runIn(dir);
