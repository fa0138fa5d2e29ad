/**
 * Crash safety with a real SIGKILL: a child process writes a seeded stream into a VHDX and is killed
 * at many points (from before its open finishes to deep into the stream). After each kill the file
 * must open (read-only and writable), check clean, and show, sector by sector, either the state after
 * the last acknowledged flush or a value written later in the stream. Rounds are cumulative: each
 * round writes into the file the previous kill left behind.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { FileSource } from '../src/io/file-source.js';
import { vhdxDriver } from '../src/formats/vhdx/driver.js';
import { vhdDriver } from '../src/formats/vhd/driver.js';
import type { FormatDriver } from '../src/formats/types.js';
import type { VirtualDisk } from '../src/formats/types.js';
import { qemuImg, requireOracle } from './helpers/oracles.js';
import { crashStream, opData, type CrashGeometry, type CrashOp } from './helpers/vhdx-crash-stream.js';
import { assertBytesEqual, composeRead, describeFindings, MIB, randomBytesFrom, readAll, Rng, tempDir } from './helpers/vhdx-util.js';

const WRITER = new URL('./helpers/vhdx-crash-writer.js', import.meta.url).pathname;
const STREAM_LENGTH = 6000;

/**
 * When to kill, by what the writer has reported (never after a delay, which a loaded machine stretches):
 * at once after the spawn, when it says it starts the open, when the open is done, or once it has
 * printed its `count`-th "flushed" line. The writer keeps running while the signal travels, so a kill
 * lands at or somewhat after its event: between flushes, often mid-write.
 */
type Kill = { after: 'spawn' | 'opening' | 'ready' } | { after: 'flushed'; count: number };
const atSpawn: Kill = { after: 'spawn' };
const atOpening: Kill = { after: 'opening' };
const atReady: Kill = { after: 'ready' };
const afterFlush = (count: number): Kill => ({ after: 'flushed', count });
const describeKill = (k: Kill): string => (k.after === 'flushed' ? `after flush ${k.count}` : `at ${k.after}`);

interface Outcome {
  acked: number;
  sawReady: boolean;
  done: boolean;
  stderr: string;
  signal: NodeJS.Signals | null;
  code: number | null;
}

function runWriter(path: string, seed: number, g: CrashGeometry, when: Kill): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WRITER, path, String(seed), String(g.virtualSize), String(g.logicalSectorSize), String(g.blockSize), String(STREAM_LENGTH)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let stderr = '';
    let killed = false;
    const kill = (): void => {
      if (!killed) child.kill('SIGKILL');
      killed = true;
    };
    if (when.after === 'spawn') kill();
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
      if (when.after === 'flushed') {
        if ((out.match(/^flushed \d+$/gm)?.length ?? 0) >= when.count) kill();
      } else if (out.includes(`${when.after}\n`)) kill();
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const flushed = [...out.matchAll(/^flushed (\d+)$/gm)].map((m) => Number(m[1]));
      resolve({ acked: flushed.length ? Math.max(...flushed) : 0, sawReady: out.includes('ready\n'), done: out.includes('done\n'), stderr, signal, code });
    });
  });
}

/**
 * Verifies `actual` against the stream: every sector equals the model after the first `acked` writes,
 * or the data of some later write that covers it. Returns the number of sectors that took a later value.
 */
function verifyAllowed(actual: Uint8Array, before: Uint8Array, writes: Extract<CrashOp, { kind: 'write' }>[], acked: number, lss: number, what: string): number {
  const expected = before.slice();
  for (const w of writes.slice(0, acked)) expected.set(opData(w), w.offset);
  const later = writes.slice(acked);
  const cache = new Map<number, Uint8Array>();
  const dataOf = (i: number): Uint8Array => {
    let d = cache.get(i);
    if (!d) cache.set(i, (d = opData(later[i]!)));
    return d;
  };
  let fromLater = 0;
  for (let off = 0; off < actual.length; off += lss) {
    const a = actual.subarray(off, off + lss);
    if (Buffer.compare(a, expected.subarray(off, off + lss)) === 0) continue;
    let ok = false;
    for (let i = 0; i < later.length && !ok; i++) {
      const w = later[i]!;
      if (w.offset <= off && off < w.offset + w.length) ok = Buffer.compare(a, dataOf(i).subarray(off - w.offset, off - w.offset + lss)) === 0;
    }
    // SIGKILL can stop a pwrite part way through a page (Linux's generic_perform_write gives up on a
    // fatal signal after a short copy), so an in-place overwrite may be torn, as on a real disk in a
    // power cut. Such a sector is accepted when every byte comes from the acknowledged state or from
    // a later write covering it; a wrong mapping (another block's data, a stale bitmap) still fails.
    if (!ok) ok = tornFromAllowed(a, off, expected, later, dataOf);
    if (!ok) assert.fail(`${what}: sector at ${off} holds a value that is neither the state after acknowledged write ${acked} nor any later write`);
    fromLater++;
  }
  return fromLater;
}

function tornFromAllowed(
  a: Uint8Array,
  off: number,
  expected: Uint8Array,
  later: Extract<CrashOp, { kind: 'write' }>[],
  dataOf: (i: number) => Uint8Array,
): boolean {
  const covering = later.flatMap((w, i) => (w.offset <= off && off < w.offset + w.length ? [dataOf(i).subarray(off - w.offset)] : []));
  if (covering.length === 0) return false;
  for (let k = 0; k < a.length; k++) {
    if (a[k] !== expected[off + k] && !covering.some((d) => d[k] === a[k])) return false;
  }
  return true;
}

interface Scenario {
  name: string;
  /** The format under test (VHDX unless said). */
  driver?: FormatDriver;
  geometry: CrashGeometry;
  /** Creates a fresh disk to crash (and any parent); returns the path the writer opens. */
  setup(dir: string, series: number): Promise<string>;
  /** What a reader of the layer (or chain) sees. */
  content(path: string, writable?: boolean): Promise<Uint8Array>;
}

let dir: string;
let cleanup: () => void;
const replayedCopies: { path: string; content: Uint8Array }[] = [];

before(() => {
  ({ dir, cleanup } = tempDir('diskchain-vhdx-crash-'));
});
after(() => cleanup?.());

async function openContent(path: string, readParent?: (t: Uint8Array, o: number) => Promise<void>, writable = false, driver: FormatDriver = vhdxDriver): Promise<Uint8Array> {
  const disk = await driver.open(await FileSource.open(path, { writable }), { writable });
  try {
    if (!readParent) return await readAll(disk);
    const out = new Uint8Array(disk.virtualSize);
    for (let off = 0; off < out.length; off += 4 * MIB) await composeRead(disk, readParent, out.subarray(off, Math.min(out.length, off + 4 * MIB)), off);
    return out;
  } finally {
    await disk.close();
  }
}

async function checkClean(path: string, what: string, driver: FormatDriver = vhdxDriver): Promise<string[]> {
  const src = await FileSource.open(path);
  const findings = await driver.check(src);
  await src.close();
  assert.deepEqual(findings.filter((f) => f.severity === 'error'), [], `${what}: check() reports errors:\n${describeFindings(findings)}`);
  return findings.map((f) => f.code);
}

/**
 * Runs `series` × kills.length rounds: each series starts from a fresh disk (so allocations and log
 * commits keep happening); rounds within a series are cumulative.
 */
async function runScenario(s: Scenario, kills: Kill[], series: number, baseSeed: number, keepCopies: boolean) {
  let killed = 0;
  let laterTotal = 0;
  const ackedLog: number[] = [];
  const codes = new Map<string, number>();
  for (let sn = 0; sn < series; sn++) {
    const path = await s.setup(dir, sn);
    let model = await s.content(path);
    for (let round = 0; round < kills.length; round++) {
      const seed = baseSeed + (sn * kills.length + round) * 7919;
      // Vary the flush a round dies after, so series do not repeat each other's kill points.
      const base = kills[round]!;
      const kill = base.after === 'flushed' ? afterFlush(base.count + new Rng(seed).int(Math.max(1, Math.floor(base.count / 4)))) : base;
      const outcome = await runWriter(path, seed, s.geometry, kill);
      const what = `${s.name} series ${sn} round ${round} (killed ${describeKill(kill)}, ${outcome.acked} writes acknowledged)`;
      if (kill.after === 'flushed') assert.ok(outcome.acked > 0, `${what}: killed after a flush line, yet no flush was acknowledged`);
      if (outcome.signal === 'SIGKILL') killed++;
      else assert.ok(outcome.done && outcome.code === 0, `${what}: writer ended by itself without finishing: code ${outcome.code}\n${outcome.stderr}`);
      assert.equal(outcome.stderr, '', `${what}: writer wrote to stderr`);
      ackedLog.push(outcome.acked);
      const writes = crashStream(seed, s.geometry, STREAM_LENGTH).filter((o): o is Extract<CrashOp, { kind: 'write' }> => o.kind === 'write');

      // Read-only: opens, checks clean (a dirty log is a warning), shows an allowed state; the file stays as it is.
      const fileBefore = readFileSync(path);
      for (const c of await checkClean(path, `${what} (before replay)`, s.driver)) codes.set(c, (codes.get(c) ?? 0) + 1);
      const roContent = await s.content(path);
      laterTotal += verifyAllowed(roContent, model, writes, outcome.acked, s.geometry.logicalSectorSize, `${what}, read-only open`);
      assert.ok(fileBefore.equals(readFileSync(path)), `${what}: the read-only open or check changed the file`);

      // Writable: replays the log; then the same content, and a clean check with no dirty log left.
      const rwContent = await s.content(path, true);
      assertBytesEqual(rwContent, roContent, `${what}: content after writable open (log replayed into the file) vs read-only`);
      const after = await checkClean(path, `${what} (after writable open)`, s.driver);
      assert.ok(!after.includes('LOG_DIRTY') && !after.includes('LOG_GUID_WITHOUT_ENTRIES'), `${what}: log still dirty after a writable open and close (${after.join(', ')})`);
      if (keepCopies) {
        const copy = join(dir, `replayed-${sn}-${round}.vhdx`);
        copyFileSync(path, copy);
        replayedCopies.push({ path: copy, content: rwContent });
      }
      model = rwContent;
    }
  }
  return { killed, acked: ackedLog, later: laterTotal, codes: [...codes].map(([c, n]) => `${c}×${n}`).join(' ') || 'none' };
}

const dynamic: Scenario = {
  name: 'dynamic',
  geometry: { virtualSize: 20 * MIB + 3 * 512, logicalSectorSize: 512, blockSize: MIB },
  async setup(d, series) {
    const path = join(d, `dyn-${series}.vhdx`);
    const disk = await vhdxDriver.create(await FileSource.create(path), { diskType: 'dynamic', virtualSize: this.geometry.virtualSize, blockSize: this.geometry.blockSize, logicalSectorSize: 512 });
    await disk.close();
    return path;
  },
  content: (path, writable) => openContent(path, undefined, writable),
};

let parentDisk: VirtualDisk | undefined;
const differencing: Scenario = {
  name: 'differencing',
  geometry: { virtualSize: 12 * MIB + 4096 * 5, logicalSectorSize: 4096, blockSize: 2 * MIB },
  async setup(d, series) {
    const g = this.geometry;
    const parentPath = join(d, `p-${series}.vhdx`);
    await parentDisk?.close();
    const parent = await vhdxDriver.create(await FileSource.create(parentPath), { diskType: 'dynamic', virtualSize: g.virtualSize, blockSize: MIB, logicalSectorSize: g.logicalSectorSize });
    const rng = new Rng(4242);
    for (let i = 0; i < 12; i++) {
      const sectors = g.virtualSize / 4096;
      const first = rng.int(sectors);
      const n = Math.min(sectors - first, 1 + rng.int(300));
      await parent.write(randomBytesFrom(rng.u32(), n * 4096), first * 4096);
    }
    const identity = parent.identity();
    await parent.close();
    parentDisk = await vhdxDriver.open(await FileSource.open(parentPath));
    const path = join(d, `c-${series}.avhdx`);
    const child = await vhdxDriver.create(await FileSource.create(path), {
      diskType: 'differencing',
      virtualSize: g.virtualSize,
      blockSize: g.blockSize,
      parent: { identity, virtualSize: g.virtualSize, logicalSectorSize: g.logicalSectorSize, physicalSectorSize: 4096, relativePath: '.\\p.vhdx', absolutePath: parentPath },
    });
    await child.close();
    return path;
  },
  content: (path, writable) => openContent(path, (t, o) => parentDisk!.read(t, o), writable),
};

const vhdDynamic: Scenario = {
  name: 'dynamic VHD',
  driver: vhdDriver,
  geometry: { virtualSize: 20 * MIB + 3 * 512, logicalSectorSize: 512, blockSize: MIB },
  async setup(d, series) {
    const path = join(d, `dyn-${series}.vhd`);
    const disk = await vhdDriver.create(await FileSource.create(path), { diskType: 'dynamic', virtualSize: this.geometry.virtualSize, blockSize: this.geometry.blockSize });
    await disk.close();
    return path;
  },
  content: (path, writable) => openContent(path, undefined, writable, vhdDriver),
};

let vhdParent: VirtualDisk | undefined;
const vhdDifferencing: Scenario = {
  name: 'differencing VHD',
  driver: vhdDriver,
  geometry: { virtualSize: 12 * MIB + 512 * 5, logicalSectorSize: 512, blockSize: 2 * MIB },
  async setup(d, series) {
    const g = this.geometry;
    const parentPath = join(d, `p-${series}.vhd`);
    await vhdParent?.close();
    const parent = await vhdDriver.create(await FileSource.create(parentPath), { diskType: 'dynamic', virtualSize: g.virtualSize, blockSize: MIB });
    const rng = new Rng(777);
    for (let i = 0; i < 12; i++) {
      const sectors = g.virtualSize / 512;
      const first = rng.int(sectors);
      const n = Math.min(sectors - first, 1 + rng.int(3000));
      await parent.write(randomBytesFrom(rng.u32(), n * 512), first * 512);
    }
    const identity = parent.identity();
    await parent.close();
    vhdParent = await vhdDriver.open(await FileSource.open(parentPath));
    const path = join(d, `c-${series}.avhd`);
    const child = await vhdDriver.create(await FileSource.create(path), {
      diskType: 'differencing',
      virtualSize: g.virtualSize,
      blockSize: g.blockSize,
      parent: { identity, virtualSize: g.virtualSize, logicalSectorSize: 512, physicalSectorSize: 512, relativePath: '.\\p.vhd', absolutePath: parentPath, parentFileName: `p-${series}.vhd` },
    });
    await child.close();
    return path;
  },
  content: (path, writable) => openContent(path, (t, o) => vhdParent!.read(t, o), writable, vhdDriver),
};

const DYNAMIC_KILLS = [atSpawn, atOpening, atReady, afterFlush(2), afterFlush(12), afterFlush(80)];
const DIFFERENCING_KILLS = [atSpawn, atOpening, atReady, afterFlush(1), afterFlush(3), afterFlush(8), afterFlush(20), afterFlush(50), afterFlush(120), afterFlush(250)];

test(`crash safety: dynamic VHDX killed with SIGKILL at ${4 * DYNAMIC_KILLS.length} points`, async (t) => {
  const r = await runScenario(dynamic, DYNAMIC_KILLS, 4, 1000, true);
  t.diagnostic(`kills ${r.killed}, acked per round ${r.acked.join(',')}, sectors holding unacknowledged writes ${r.later}, findings before replay: ${r.codes}`);
  assert.ok(r.killed >= 20, `only ${r.killed} rounds ended in a kill (acked per round: ${r.acked.join(',')})`);
  // The run must have exercised both early kills and kills after acknowledged flushes.
  assert.ok(r.acked.some((a) => a === 0), `no round was killed before its first flush: ${r.acked.join(',')}`);
  assert.ok(r.acked.filter((a) => a > 0).length >= 5, `too few rounds got past a flush: ${r.acked.join(',')}`);
});

test(`crash safety: differencing VHDX killed with SIGKILL at ${2 * DIFFERENCING_KILLS.length} points`, async (t) => {
  try {
    const r = await runScenario(differencing, DIFFERENCING_KILLS, 2, 5000, false);
    t.diagnostic(`kills ${r.killed}, acked per round ${r.acked.join(',')}, sectors holding unacknowledged writes ${r.later}, findings before replay: ${r.codes}`);
    assert.ok(r.killed >= 16, `only ${r.killed} rounds ended in a kill (acked per round: ${r.acked.join(',')})`);
    assert.ok(r.acked.filter((a) => a > 0).length >= 6, `too few rounds got past a flush: ${r.acked.join(',')}`);
  } finally {
    await parentDisk?.close();
  }
});

test('qemu-img check passes on each replayed dynamic file, and qemu reads the same bytes', async (t) => {
  if (!requireOracle(t, 'qemu-img')) return;
  assert.ok(replayedCopies.length >= 10, `only ${replayedCopies.length} replayed copies (did the dynamic crash test run?)`);
  for (const [i, c] of replayedCopies.entries()) {
    try {
      qemuImg(['check', '-f', 'vhdx', c.path]);
    } catch (e) {
      const err = e as { stdout?: string; stderr?: string };
      assert.fail(`qemu-img check failed on round ${i}: ${err.stdout ?? ''}${err.stderr ?? ''}`);
    }
    if (i % 4 === 3 || i === replayedCopies.length - 1) {
      const raw = `${c.path}.raw`;
      qemuImg(['convert', '-f', 'vhdx', '-O', 'raw', c.path, raw]);
      assertBytesEqual(new Uint8Array(readFileSync(raw)), c.content, `qemu-img convert of round ${i}`);
    }
  }
});

test(`crash safety: dynamic VHD killed with SIGKILL at ${4 * DYNAMIC_KILLS.length} points`, async (t) => {
  const r = await runScenario(vhdDynamic, DYNAMIC_KILLS, 4, 9000, false);
  t.diagnostic(`kills ${r.killed}, acked per round ${r.acked.join(',')}, sectors holding unacknowledged writes ${r.later}, findings: ${r.codes}`);
  assert.ok(r.killed >= 20, `only ${r.killed} rounds ended in a kill (acked per round: ${r.acked.join(',')})`);
  assert.ok(r.acked.filter((a) => a > 0).length >= 5, `too few rounds got past a flush: ${r.acked.join(',')}`);
});

test(`crash safety: differencing VHD killed with SIGKILL at ${2 * DIFFERENCING_KILLS.length} points`, async (t) => {
  try {
    const r = await runScenario(vhdDifferencing, DIFFERENCING_KILLS, 2, 13000, false);
    t.diagnostic(`kills ${r.killed}, acked per round ${r.acked.join(',')}, sectors holding unacknowledged writes ${r.later}, findings: ${r.codes}`);
    assert.ok(r.killed >= 16, `only ${r.killed} rounds ended in a kill (acked per round: ${r.acked.join(',')})`);
    assert.ok(r.acked.filter((a) => a > 0).length >= 6, `too few rounds got past a flush: ${r.acked.join(',')}`);
  } finally {
    await vhdParent?.close();
  }
});
