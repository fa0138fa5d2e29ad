/**
 * Removing checkpoints of a running VM (runtime/live-remove.ts) on real QEMU (TCG) with the test
 * guest. The VM has a third disk (disk2, 48 MiB) the guest never writes, holding known data in a
 * tree A ← B ← C ← Now made before the boot; the guest's counter ticks on disk0 throughout.
 *
 * - remove B (a middle checkpoint) while the guest writes: C's layer merges into B's, Now's leaf is
 *   handed over through the worker's served handle. disk2 read through the worker's NBD socket never
 *   changes during the removal; every checkpoint left and Now read as the flat copies hashed before;
 *   the counter goes on (same boot); vm check is clean afterwards.
 * - remove C (Now's parent) while the guest writes: Now's leaf merges into its parent (the guest's
 *   writes mirrored meanwhile), the export switches to the parent; the guest's writes go on there.
 * - cancel: removing A is cancelled at the merge's boundary (held there by DISKCHAIN_TEST_HOLD_AT):
 *   ABORTED, A is gone, its layer stays unnamed, nothing is pending, every view unchanged.
 * - kill -9 of the worker mid-merge (at its first progress mark, DISKCHAIN_TEST_CRASH_AT): stale
 *   run/, `vm check` reports the interrupted operation, `--repair` finishes it, the views are the
 *   flat copies, and the VM starts again; then killed again in the switch of Now's leaf merged into
 *   its parent (removing C: rebases into Now's leaf first, where the parent holds less), and repaired.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { createVm } from '../src/checkpoint/vm-create.js';
import { withVm } from '../src/api/vm.js';
import { removeVm } from '../src/api/vm-remove.js';
import { startVm, stopVm, vmStatus } from '../src/api/vm-runtime.js';
import type { GuestImage } from './helpers/guest.js';
import { pollUntil, requireGuest, tempFolder } from './helpers/guest.js';
import { NbdClient } from './helpers/nbd-client.js';
import { guestDiskOf, killVm, serialOf } from './helpers/vm-runtime.js';

const MIB = 1 << 20;
const DISK2 = 48 * MIB;

/** The guest's VM plus disk2, with checkpoints A, B, C of known disk2 data; returns the flat views' hashes. */
async function makeTree(dir: string, image: GuestImage): Promise<{ folder: string; views: Map<string, string> }> {
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
      ['B', 8 * MIB, 24 * MIB],
      ['C', 4 * MIB, 20 * MIB],
    ];
    for (const [name, offset, length] of layers) {
      const chain = await vm.openDisk('disk2', { writable: true });
      try {
        await chain.write(randomBytes(length), offset);
        await chain.flush();
      } finally {
        await chain.close();
      }
      await vm.checkpoint({ name });
    }
  });
  const views = new Map<string, string>();
  for (const ref of ['A', 'B', 'C', 'Now']) views.set(ref, await disk2Hash(folder, ref));
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

test('remove checkpoints of a running VM while the guest writes: middle merge, cancel', { timeout: 300_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-live-rm-');
  const hold = join(dir, 'hold');
  try {
    const { folder, views } = await makeTree(dir, image);
    await startVm(folder, { env: { ...process.env, DISKCHAIN_TEST_HOLD_AT: 'live-remove:collapse', DISKCHAIN_TEST_HOLD_FILE: hold } });
    await serialOf(folder).waitFor(/diskchain-guest: ready boots=1/, 90_000);
    await pollUntil(() => lastTick(folder), (n) => n >= 3, 30_000, 'ticks');
    const servedBefore = await servedHash(folder);
    assert.equal(servedBefore, views.get('Now'));

    await t.test('cancel: removing A stops at its merge, A is gone, its layer stays unnamed, nothing changes', async () => {
      const abort = new AbortController();
      const removal = removeVm(folder, 'A', { signal: abort.signal });
      removal.catch(() => undefined);
      await pollUntil(async () => existsSync(hold), (x) => x, 60_000, 'the removal held at its merge');
      abort.abort();
      await rm(hold);
      await assert.rejects(removal, (e: Error & { code?: string }) => e.code === 'ABORTED');
      assert.deepEqual(await names(folder), ['B', 'C']);
      const report = await check(folder);
      assert.equal(report.findings.filter((f) => f.severity === 'error').length, 0, JSON.stringify(report.findings));
      for (const ref of ['B', 'C', 'Now']) assert.equal(await disk2Hash(folder, ref), views.get(ref), ref);
      assert.equal(await servedHash(folder), servedBefore);
      assert.equal((await vmStatus(folder)).state, 'Running');
    });

    await t.test('remove B (a middle checkpoint) while the guest writes: the served view never changes, the result equals the flat copies', async () => {
      const tickBefore = await lastTick(folder);
      const progress: number[] = [];
      const removal = removeVm(folder, 'B', { onProgress: (done) => progress.push(done) });
      let done = false;
      void removal.finally(() => (done = true)).catch(() => undefined);
      const seen: string[] = [];
      while (!done) seen.push(await servedHash(folder));
      const r = await removal;
      assert.equal(r.running, true);
      assert.deepEqual(r.removed.map((c) => c.name), ['B']);
      assert.ok(r.merged.length >= 3, `merges: ${JSON.stringify(r.merged.map((m) => [m.victim, m.direction, m.survivor]))}`);
      for (const h of seen) assert.equal(h, servedBefore, 'disk2 as served during the removal');
      assert.equal(await servedHash(folder), servedBefore);
      assert.deepEqual(await names(folder), ['C']);
      for (const ref of ['C', 'Now']) assert.equal(await disk2Hash(folder, ref), views.get(ref), ref);
      await pollUntil(() => lastTick(folder), (n) => n >= tickBefore + 3, 30_000, 'ticks after the removal');
      assert.doesNotMatch(await serialOf(folder).text(), /ready boots=2/);
      assert.equal((await vmStatus(folder)).state, 'Running');
      const disk0 = await guestDiskOf(folder);
      assert.ok(disk0.latest!.tick > tickBefore, `the counter went on on disk0: ${disk0.latest!.tick} after ${tickBefore}`);
      t.diagnostic(`served passes during the removal: ${seen.length}; progress reports: ${progress.length}`);
    });

    await t.test("remove C (Now's parent) while the guest writes: Now's leaf merges into it, the export switches to it", async () => {
      const tickBefore = await lastTick(folder);
      const removal = removeVm(folder, 'C');
      let done = false;
      void removal.finally(() => (done = true)).catch(() => undefined);
      const seen: string[] = [];
      while (!done) seen.push(await servedHash(folder));
      const r = await removal;
      assert.deepEqual(r.removed.map((c) => c.name), ['C']);
      assert.ok(r.merged.some((m) => m.direction === 'merge'), JSON.stringify(r.merged));
      for (const h of seen) assert.equal(h, servedBefore, 'disk2 as served during the removal');
      assert.deepEqual(await names(folder), []);
      const files = await withVm(folder, { lock: 'none', recover: false, command: 'test' }, async (vm) => vm.manifest.nodes.map((n) => n.file));
      assert.equal(files.length, 3, `one file per disk is left: ${files.join(', ')}`);
      assert.equal(await servedHash(folder), servedBefore);
      assert.equal(await disk2Hash(folder, 'Now'), views.get('Now'));
      const after = await pollUntil(() => lastTick(folder), (n) => n >= tickBefore + 4, 30_000, 'ticks after the switch');
      await pollUntil(async () => (await guestDiskOf(folder)).latest!.tick, (n) => n >= after, 30_000, 'the guest writes into the merged file');
      assert.doesNotMatch(await serialOf(folder).text(), /ready boots=2/);
      assert.equal((await vmStatus(folder)).state, 'Running');
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
    // Again, killed in the switch of Now's leaf merged into its parent (after the step copied, before the commit).
    await startVm(folder, { env: { ...process.env, DISKCHAIN_TEST_CRASH_AT: 'live-remove:leaf-copied' } });
    await serialOf(folder).waitFor(/diskchain-guest: ready boots=2/, 90_000);
    assert.equal(await servedHash(folder), views.get('Now'));
    await pollUntil(() => lastTick(folder), (n) => n >= 3, 30_000, 'ticks');
    await assert.rejects(removeVm(folder, 'C'), (e: Error & { code?: string }) => e.code === 'QMP_CLOSED');
    await pollUntil(() => vmStatus(folder), (x) => x.workerPid === null || x.stale !== null, 30_000, 'the worker gone');
    const tick = await lastTick(folder);
    assert.ok((await check(folder, true)).repaired!.recovered.length > 0);
    assert.ok((await check(folder)).clean);
    assert.deepEqual(await names(folder), ['A']);
    for (const ref of ['A', 'Now']) assert.equal(await disk2Hash(folder, ref), views.get(ref), ref);
    const disk0 = await guestDiskOf(folder);
    assert.equal(disk0.boot?.boots, 2);
    assert.ok(disk0.latest!.tick >= tick - 1, `disk0 holds the guest's writes up to the kill: ${disk0.latest!.tick}, serial ${tick}`);
  } finally {
    await killVm(join(dir, 'vm'));
    await remove();
  }
});
