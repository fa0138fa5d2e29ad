/**
 * Removing checkpoints of a running VM (runtime/live-remove.ts) on real QEMU (TCG) with the test
 * guest. The VM has a third disk (disk2, 48 MiB) the guest never writes, holding known data in a
 * tree A ← B ← C ← Now made before the boot; the guest's counter ticks on disk0 throughout.
 *
 * - remove X, then Y, a branch under A off Now's (made by applying A): the engine's collapse of files
 *   the worker does not serve, then Y's layers deleted; the served disk never changes.
 * - remove B (a middle checkpoint) while the guest writes: C's layer merges into B's, Now's leaf is
 *   handed over through the worker's served handle. disk2 read through the worker's NBD socket never
 *   changes during the removal; every checkpoint left and Now read as the flat copies hashed before;
 *   the counter goes on (same boot); vm check is clean afterwards.
 * - cancel (Ctrl-C of the CLI's `checkpoint remove`): removing C is cancelled while Now's leaf (disk2) is being merged into its parent (held
 *   after its first piece by DISKCHAIN_TEST_HOLD_AT): ABORTED, C is gone, its layer stays unnamed,
 *   nothing is pending, every view unchanged.
 * - remove A while the guest writes: the layer the cancel left merges, then Now's leaves merge into
 *   their parents (the guest's writes mirrored meanwhile), the exports switch; the guest writes on.
 * - kill -9 of the worker (DISKCHAIN_TEST_CRASH_AT) three times: in the middle merge (its first
 *   progress mark), while Now's leaf is copied into its parent with the guest's writes mirrored, and
 *   in that switch after the step copied. Each time: stale run/, `vm check` reports the interrupted
 *   operation, `--repair` finishes it, the views are the flat copies, the guest's records are on
 *   disk0, and the VM starts again.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { createVm } from '../src/checkpoint/vm-create.js';
import { withVm } from '../src/api/vm.js';
import { removeVm } from '../src/api/vm-remove.js';
import { startVm, stopVm, vmStatus } from '../src/api/vm-runtime.js';
import type { GuestImage } from './helpers/guest.js';
import { EXIT } from '../src/cli/output.js';
import { callControl } from '../src/runtime/control.js';
import { CLI } from './helpers/cli.js';
import { pollUntil, requireGuest, tempFolder } from './helpers/guest.js';
import { NbdClient } from './helpers/nbd-client.js';
import { guestDiskOf, killVm, serialOf } from './helpers/vm-runtime.js';

const MIB = 1 << 20;
const DISK2 = 48 * MIB;

/** The guest's VM plus disk2, with checkpoints A, B, C of known disk2 data; returns the flat views' hashes. */
async function makeTree(dir: string, image: GuestImage, options: { branch?: boolean } = {}): Promise<{ folder: string; views: Map<string, string> }> {
  const folder = join(dir, 'vm');
  await createVm(folder, {
    newDisks: [{ size: MIB }, { size: 16 * MIB }, { size: DISK2 }],
    memoryBytes: 256 * MIB,
    checkpointType: 'standard',
    settings: { boot: { kind: 'kernel', kernel: image.kernel, initrd: image.initrd, append: 'console=ttyS0 panic=-1' } },
  });
  await withVm(folder, { command: 'test' }, async (vm) => {
    const layers: Array<[string, number, number]> = [
      ['A', 0, 16 * MIB],
      // With a branch: X ← Y under A, then A applied (Now starts from A again), off Now's branch.
      ...(options.branch ? ([['X', 2 * MIB, 8 * MIB], ['Y', 6 * MIB, 4 * MIB], ['apply A', 0, 0]] as Array<[string, number, number]>) : []),
      ['B', 8 * MIB, 24 * MIB],
      ['C', 4 * MIB, 20 * MIB],
    ];
    for (const [name, offset, length] of layers) {
      if (name === 'apply A') {
        await vm.apply('A');
        continue;
      }
      const chain = await vm.openDisk('disk2', { writable: true });
      try {
        await chain.write(randomBytes(length), offset);
        await chain.flush();
      } finally {
        await chain.close();
      }
      await vm.checkpoint({ name });
    }
    // Now's own layer holds data too, so merging it into its parent copies pieces.
    const now = await vm.openDisk('disk2', { writable: true });
    try {
      await now.write(randomBytes(8 * MIB), 36 * MIB);
      await now.flush();
    } finally {
      await now.close();
    }
  });
  const views = new Map<string, string>();
  for (const ref of ['A', 'B', 'C', 'Now', ...(options.branch ? ['X', 'Y'] : [])]) views.set(ref, await disk2Hash(folder, ref));
  return { folder, views };
}

async function disk2Hash(folder: string, ref: string): Promise<string> {
  return withVm(folder, { lock: 'none', recover: false, command: 'test' }, async (vm) => {
    const chain = await vm.openDisk('disk2', { forceShare: true, ...(ref === 'Now' ? {} : { checkpoint: ref }) });
    try {
      const h = createHash('sha256');
      const buf = new Uint8Array(4 * MIB);
      for (let at = 0; at < DISK2; at += buf.length) {
        await chain.read(buf, at);
        h.update(buf);
      }
      return h.digest('hex');
    } finally {
      await chain.close();
    }
  });
}

/** disk2 as the worker serves it to QEMU, read over its NBD socket. */
async function servedHash(folder: string): Promise<string> {
  const client = await NbdClient.connect(join(folder, 'run', 'nbd.sock'), { exportName: 'disk2' });
  try {
    const h = createHash('sha256');
    for (let at = 0; at < DISK2; at += 4 * MIB) h.update(await client.read(at, 4 * MIB));
    return h.digest('hex');
  } finally {
    await client.disconnect();
  }
}

const lastTick = async (folder: string): Promise<number> => (await serialOf(folder).ticks()).at(-1) ?? 0;
const names = (folder: string): Promise<string[]> => withVm(folder, { lock: 'none', recover: false, command: 'test' }, async (vm) => vm.manifest.checkpoints.map((c) => c.name));
const check = (folder: string, repair = false) => withVm(folder, { lock: repair ? 'write' : 'none', recover: false, command: 'test' }, (vm) => vm.check({ repair }));

/** A removal (`start`) while disk2 is read through the worker's NBD socket, pass after pass, until it settles. */
async function removeWatching<T>(folder: string, start: () => Promise<T>): Promise<{ outcome: Promise<T>; seen: string[] }> {
  const removal = start();
  let done = false;
  const settled = removal.then(
    () => (done = true),
    () => (done = true),
  );
  const seen: string[] = [];
  while (!done) seen.push(await servedHash(folder));
  await settled;
  return { outcome: removal, seen };
}

/** The CLI as a process: its exit code and output. */
function runCli(args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return { child, done: new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr }))) };
}

test('remove checkpoints of a running VM while the guest writes: off the branch, a middle one, a cancelled one, the one under Now', { timeout: 300_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-live-rm-');
  const hold = join(dir, 'hold');
  try {
    const { folder, views } = await makeTree(dir, image, { branch: true });
    await startVm(folder, { env: { ...process.env, DISKCHAIN_TEST_HOLD_AT: 'live-remove:piece', DISKCHAIN_TEST_HOLD_FILE: hold } });
    await serialOf(folder).waitFor(/diskchain-guest: ready boots=1/, 90_000);
    await pollUntil(() => lastTick(folder), (n) => n >= 3, 30_000, 'ticks');
    const servedBefore = await servedHash(folder);
    assert.equal(servedBefore, views.get('Now'));
    const unchanged = async (refs: string[]): Promise<void> => {
      for (const ref of refs) assert.equal(await disk2Hash(folder, ref), views.get(ref), ref);
      assert.equal(await servedHash(folder), servedBefore);
      assert.equal((await vmStatus(folder)).state, 'Running');
      assert.doesNotMatch(await serialOf(folder).text(), /ready boots=2/);
    };

    await t.test("remove X, then Y (off Now's branch) while the guest runs: the engine's collapse, then the leaf deleted; nothing served changes", async () => {
      const { outcome, seen } = await removeWatching(folder, () => removeVm(folder, 'X'));
      const r = await outcome;
      assert.deepEqual(r.removed.map((c) => c.name), ['X']);
      assert.equal(r.merged.length, 3, JSON.stringify(r.merged));
      assert.deepEqual(await names(folder), ['A', 'Y', 'B', 'C']);
      await unchanged(['A', 'Y', 'B', 'C', 'Now']);
      const y = await removeWatching(folder, () => removeVm(folder, 'Y'));
      const ry = await y.outcome;
      assert.equal(ry.deleted.length, 3, `Y's layers deleted: ${JSON.stringify(ry)}`);
      assert.equal(ry.merged.length, 0);
      for (const h of [...seen, ...y.seen]) assert.equal(h, servedBefore, 'disk2 as served during the removals');
      assert.deepEqual(await names(folder), ['A', 'B', 'C']);
      await unchanged(['A', 'B', 'C', 'Now']);
    });

    await t.test('remove B (a middle checkpoint) while the guest writes: the served view never changes, the result equals the flat copies', async () => {
      const tickBefore = await lastTick(folder);
      const progress: number[] = [];
      const { outcome, seen } = await removeWatching(folder, () => removeVm(folder, 'B', { onProgress: (done) => progress.push(done) }));
      const r = await outcome;
      assert.equal(r.running, true);
      assert.deepEqual(r.removed.map((c) => c.name), ['B']);
      assert.equal(r.merged.length, 3, `one merge per disk: ${JSON.stringify(r.merged.map((m) => [m.victim, m.direction, m.survivor]))}`);
      for (const h of seen) assert.equal(h, servedBefore, 'disk2 as served during the removal');
      assert.deepEqual(await names(folder), ['A', 'C']);
      await unchanged(['A', 'C', 'Now']);
      await pollUntil(() => lastTick(folder), (n) => n >= tickBefore + 3, 30_000, 'ticks after the removal');
      const disk0 = await guestDiskOf(folder);
      assert.ok(disk0.latest!.tick > tickBefore, `the counter went on on disk0: ${disk0.latest!.tick} after ${tickBefore}`);
      t.diagnostic(`served passes during the removal: ${seen.length}; progress reports: ${progress.length}`);
    });

    await t.test("cancel (Ctrl-C of the CLI): removing C stops in the middle of merging Now's leaf into its parent; C is gone, nothing reads differently", async () => {
      const cli = runCli(['checkpoint', 'remove', folder, 'C']);
      const watching = removeWatching(folder, () => cli.done);
      await pollUntil(async () => existsSync(hold), (x) => x, 60_000, 'the removal held after its first piece');
      cli.child.kill('SIGINT');
      const control = join(folder, 'run', 'control.sock');
      await pollUntil(() => callControl(control, 'remove-progress') as Promise<{ cancelling: boolean } | null>, (p) => p?.cancelling === true, 30_000, 'the cancel reached the worker');
      await rm(hold);
      const { outcome, seen } = await watching;
      const { code, stderr } = await outcome;
      assert.equal(code, EXIT.aborted, stderr);
      assert.equal(stderr.trim().split('\n').length, 1, `one line: ${stderr}`);
      for (const h of seen) assert.equal(h, servedBefore, 'disk2 as served during the removal');
      assert.deepEqual(await names(folder), ['A']);
      const report = await check(folder);
      assert.equal(report.findings.filter((f) => f.severity === 'error').length, 0, JSON.stringify(report.findings));
      await unchanged(['A', 'Now']);
    });

    await t.test("remove A while the guest writes: the layer the cancel left, then Now's leaves merged into their parents, the exports switched", async () => {
      const tickBefore = await lastTick(folder);
      const { outcome, seen } = await removeWatching(folder, () => removeVm(folder, 'A'));
      const r = await outcome;
      assert.deepEqual(r.removed.map((c) => c.name), ['A']);
      assert.ok(r.merged.filter((m) => m.direction === 'merge').length >= 3, JSON.stringify(r.merged));
      for (const h of seen) assert.equal(h, servedBefore, 'disk2 as served during the removal');
      assert.deepEqual(await names(folder), []);
      const files = await withVm(folder, { lock: 'none', recover: false, command: 'test' }, async (vm) => vm.manifest.nodes.map((n) => n.file));
      assert.equal(files.length, 3, `one file per disk is left: ${files.join(', ')}`);
      await unchanged(['Now']);
      const after = await pollUntil(() => lastTick(folder), (n) => n >= tickBefore + 4, 30_000, 'ticks after the switch');
      await pollUntil(async () => (await guestDiskOf(folder)).latest!.tick, (n) => n >= after, 30_000, 'the guest writes into the merged file');
    });

    await t.test('stopped: the folder is clean and holds what the guest wrote', async () => {
      const tick = await lastTick(folder);
      await stopVm(folder, { force: true });
      const report = await check(folder);
      assert.ok(report.clean, JSON.stringify(report.findings));
      assert.equal(await disk2Hash(folder, 'Now'), views.get('Now'));
      assert.ok((await guestDiskOf(folder)).latest!.tick >= tick - 1);
    });
  } finally {
    await killVm(join(dir, 'vm'));
    await remove();
  }
});

test('kill -9 of the worker in the middle of a live merge: vm check --repair finishes it', { timeout: 300_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-live-rm-crash-');
  try {
    const { folder, views } = await makeTree(dir, image);
    await startVm(folder, { env: { ...process.env, DISKCHAIN_TEST_CRASH_AT: 'live-remove:progress' } });
    await serialOf(folder).waitFor(/diskchain-guest: ready boots=1/, 90_000);
    await assert.rejects(removeVm(folder, 'B'), (e: Error & { code?: string }) => e.code === 'QMP_CLOSED');
    const s = await pollUntil(() => vmStatus(folder), (x) => x.workerPid === null || x.stale !== null, 30_000, 'the worker gone');
    assert.ok(s.stale, 'run/ is stale');
    const before = await check(folder);
    assert.ok(!before.clean, 'vm check reports the interrupted removal');
    const repaired = await check(folder, true);
    assert.ok(repaired.repaired && repaired.repaired.recovered.length > 0, JSON.stringify(repaired));
    const after = await check(folder);
    assert.ok(after.clean, JSON.stringify(after.findings));
    assert.deepEqual(await names(folder), ['A', 'C']);
    for (const ref of ['A', 'C', 'Now']) assert.equal(await disk2Hash(folder, ref), views.get(ref), ref);
    // Killed again, at each boot: removing C, in the middle of copying Now's leaf (disk2) into its
    // parent with the guest's changes mirrored (recovery merges it again from the start); removing A,
    // in the switch of Now's leaf merged into its parent, after the step copied (recovery commits).
    const kills: Array<[string, string, string[]]> = [
      ['C', 'live-remove:progress', ['A']],
      ['A', 'live-remove:leaf-copied', []],
    ];
    let boots = 1;
    for (const [ref, at, left] of kills) {
      boots++;
      await startVm(folder, { env: { ...process.env, DISKCHAIN_TEST_CRASH_AT: at } });
      await serialOf(folder).waitFor(new RegExp(`diskchain-guest: ready boots=${boots}`), 90_000);
      assert.equal(await servedHash(folder), views.get('Now'));
      await pollUntil(() => lastTick(folder), (n) => n >= 3, 30_000, 'ticks');
      await assert.rejects(removeVm(folder, ref), (e: Error & { code?: string }) => e.code === 'QMP_CLOSED', `killed at ${at}`);
      await pollUntil(() => vmStatus(folder), (x) => x.workerPid === null || x.stale !== null, 30_000, 'the worker gone');
      const tick = await lastTick(folder);
      assert.ok(!(await check(folder)).clean, 'vm check reports the interrupted removal');
      assert.ok((await check(folder, true)).repaired!.recovered.length > 0);
      const after = await check(folder);
      assert.ok(after.clean, JSON.stringify(after.findings));
      assert.deepEqual(await names(folder), left);
      for (const r of [...left, 'Now']) assert.equal(await disk2Hash(folder, r), views.get(r), r);
      const disk0 = await guestDiskOf(folder);
      assert.equal(disk0.boot?.boots, boots);
      assert.ok(disk0.latest!.tick >= tick - 1, `disk0 holds the guest's writes up to the kill: ${disk0.latest!.tick}, serial ${tick}`);
    }
    await startVm(folder);
    await serialOf(folder).waitFor(new RegExp(`diskchain-guest: ready boots=${boots + 1}`), 90_000);
    assert.equal(await servedHash(folder), views.get('Now'));
    await stopVm(folder, { force: true });
  } finally {
    await killVm(join(dir, 'vm'));
    await remove();
  }
});
