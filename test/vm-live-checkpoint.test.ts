/**
 * Live checkpoints on real QEMU (TCG) with the test guest, one boot: a standard checkpoint while the
 * counter ticks (the frozen files never change again, later writes land in the new children only),
 * a production one (the guest agent freezes the data disk's ext2; no memory), applying the standard
 * one (the guest resumes and its in-memory counter goes on from the checkpoint's value, not from the
 * latest) and then the production one (the VM is off, its disk at the checkpoint).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { withVm } from '../src/api/vm.js';
import { applyVm, checkpointVm, startVm, vmStatus } from '../src/api/vm-runtime.js';
import { pollUntil, requireGuest, tempFolder } from './helpers/guest.js';
import { guestDiskOf, killVm, makeGuestVm, serialOf } from './helpers/vm-runtime.js';

const sha256 = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');
const lastTick = async (folder: string): Promise<number> => (await serialOf(folder).ticks()).at(-1) ?? 0;

test('live standard and production checkpoints, and applying them, on a running VM', { timeout: 300_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-live-');
  const folder = await makeGuestVm(dir, image, 'vm', { checkpointType: 'production' });
  const pauses: Record<string, number> = {};
  try {
    await startVm(folder);
    await serialOf(folder).waitFor(/diskchain-guest: ready boots=1 .* agent=yes data=yes/, 90_000);
    await pollUntil(() => lastTick(folder), (n) => n >= 3, 30_000, 'ticks');

    let standard = { id: '', tick: 0, files: [] as string[] };
    await t.test('standard: memory saved, the frozen layers never change again, later writes land in the new children', async () => {
      const r = await checkpointVm(folder, { name: 'std', type: 'standard' });
      pauses.standardMs = r.pauseMs;
      assert.equal(r.running, true);
      assert.equal(r.checkpoint.type, 'standard');
      assert.ok(r.pauseMs > 0);
      assert.ok(r.stateBytes !== null && r.stateBytes > 1 << 20, `state ${r.stateBytes} bytes`);
      const atCheckpoint = await guestDiskOf(folder, r.checkpoint.id);
      standard = { id: r.checkpoint.id, tick: atCheckpoint.latest!.tick, files: r.checkpoint.disks.map((d) => join(folder, d.file)) };
      const hashes = await Promise.all(standard.files.map(sha256));
      await pollUntil(() => lastTick(folder), (n) => n >= standard.tick + 4, 30_000, 'ticks after the checkpoint');
      assert.deepEqual(await Promise.all(standard.files.map(sha256)), hashes, 'the frozen layers are unchanged');
      assert.equal((await guestDiskOf(folder, r.checkpoint.id)).latest!.tick, standard.tick);
      const now = await guestDiskOf(folder);
      assert.ok(now.latest!.tick > standard.tick, `Now's disk goes on: ${now.latest!.tick} after ${standard.tick}`);
      assert.equal(now.boot?.id, atCheckpoint.boot?.id);
      const m = await withVm(folder, { lock: 'none', command: 'test' }, async (vm) => vm.manifest);
      const c = m.checkpoints.find((x) => x.id === r.checkpoint.id)!;
      assert.ok(c.state, 'the checkpoint names its state file');
      assert.notDeepEqual(Object.values(m.now.disks), Object.values(c.disks));
    });

    let production = { id: '', tick: 0 };
    await t.test('production: the guest agent freezes the file systems, no memory', async () => {
      const r = await checkpointVm(folder, { name: 'prod' });
      pauses.productionMs = r.pauseMs;
      assert.equal(r.checkpoint.type, 'production');
      assert.equal(r.fallback, null);
      assert.equal(r.frozen, 1);
      assert.equal(r.stateBytes, null);
      production = { id: r.checkpoint.id, tick: (await guestDiskOf(folder, r.checkpoint.id)).latest!.tick };
      const dataLayer = join(folder, r.checkpoint.disks.find((d) => d.id === 'disk1')!.file);
      const before = await sha256(dataLayer);
      await pollUntil(() => lastTick(folder), (n) => n >= production.tick + 3, 30_000, 'ticks after the production checkpoint');
      assert.equal(await sha256(dataLayer), before);
      assert.equal((await vmStatus(folder)).state, 'Running');
    });

    await t.test('apply the standard checkpoint: the guest runs again from that instant', async () => {
      const latest = await lastTick(folder);
      const r = await applyVm(folder, standard.id);
      assert.equal(r.state, 'Running');
      assert.equal((await vmStatus(folder)).state, 'Running');
      const ticks = await pollUntil(() => serialOf(folder).ticks(), (x) => x.length >= 2, 30_000, 'ticks after the apply');
      assert.doesNotMatch(await serialOf(folder).text(), /diskchain-guest: ready/, 'a restore, not a boot');
      assert.ok(ticks[0]! >= standard.tick && ticks[0]! <= standard.tick + 2, `the counter goes on from the checkpoint's ${standard.tick}, not from ${latest}: ${ticks.slice(0, 3).join(', ')}`);
      assert.ok(ticks[0]! < latest);
    });

    await t.test('apply the production checkpoint: the VM is off, its disk at the checkpoint', async () => {
      const r = await applyVm(folder, production.id);
      assert.equal(r.state, 'Off');
      const s = await vmStatus(folder);
      assert.equal(s.state, 'Off');
      assert.equal(s.workerPid, null);
      assert.equal((await guestDiskOf(folder)).latest!.tick, production.tick);
      const report = await withVm(folder, { lock: 'none', recover: false, command: 'test' }, (vm) => vm.check());
      assert.ok(report.clean, JSON.stringify(report.findings));
    });
    t.diagnostic(`guest pauses (ms): ${JSON.stringify(pauses)}`);
  } finally {
    await killVm(folder);
    await remove();
  }
});
