/**
 * The test guest under real QEMU (TCG), on raw files: boot record and ticking counter on disk and
 * console; QMP stop/cont; fsfreeze through the guest agent; the memory and device state saved with
 * `migrate` and the VM continued; the state restored on a copy of the disks taken at the save, where
 * the in-memory counter continues from the saved value; ACPI power-off; a cold boot that restarts
 * the counter. One boot is shared by the steps; the numbers measured are printed as diagnostics.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { GuestAgentClient } from '../src/vm/guest-agent.js';
import type { QemuDisk } from '../src/vm/qemu-command.js';
import type { ShutdownData } from '../src/vm/qmp-schema.js';
import { loadState, saveState } from '../src/vm/state-file.js';
import { GuestVm, makeRawDisk, pollUntil, readGuestDisk, requireGuest, tempFolder } from './helpers/guest.js';

const sha256 = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');
const rawDisks = (system: string, data: string): QemuDisk[] => [
  { kind: 'file', path: system },
  { kind: 'file', path: data },
];

test('the test guest on QEMU: ticks, stop/cont, fsfreeze, save, restore, power-off, reboot', { timeout: 240_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder();
  const vms: GuestVm[] = [];
  const agents: GuestAgentClient[] = [];
  const measured: Record<string, number> = {};
  try {
    const system = await makeRawDisk(join(dir, 'system.raw'), 1 << 20);
    const data = await makeRawDisk(join(dir, 'data.raw'), 16 << 20);

    const bootStart = performance.now();
    const a = await GuestVm.start({ image, dir, name: 'a', disks: rawDisks(system, data), agent: true });
    vms.push(a);
    const ready = await a.ready();
    measured.bootToReadyMs = performance.now() - bootStart;
    let tStop = 0;

    await t.test('first boot: boot record, then a counter on disk and console', async () => {
      assert.deepEqual([ready.boots, ready.agent, ready.data], [1, true, true]);
      await a.tickAtLeast(3);
      const view = await readGuestDisk(system);
      assert.deepEqual(view.boot, { boots: 1, id: ready.id });
      assert.equal(view.latest?.id, ready.id);
      assert.ok(view.latest!.tick >= 2, `disk tick ${view.latest?.tick}`);
    });

    await t.test('stop pauses the guest (nothing more reaches the disk), cont resumes it', async () => {
      let started = performance.now();
      await a.qemu.qmp.execute('stop');
      measured.stopMs = performance.now() - started;
      assert.equal((await a.qemu.qmp.execute('query-status')).status, 'paused');
      const atStop = await readGuestDisk(system);
      const printed = (await a.serial.ticks()).length;
      tStop = atStop.latest!.tick;
      // the ring holds every tick of this boot, 1..tStop (or tStop-1 when stopped between the two writes)
      const ring = atStop.ring.map((r) => r.tick);
      assert.equal(ring[0], Math.max(1, ring.at(-1)! - 255));
      assert.ok(ring.every((tick, i) => i === 0 || tick === ring[i - 1]! + 1));
      assert.ok(ring.at(-1) === tStop || ring.at(-1) === tStop - 1, `ring ends at ${ring.at(-1)}, LBA 1 says ${tStop}`);
      await sleep(700); // more than four tick periods
      assert.equal((await readGuestDisk(system)).latest!.tick, tStop);
      assert.equal((await a.serial.ticks()).length, printed);

      started = performance.now();
      await a.qemu.qmp.execute('cont');
      measured.contMs = performance.now() - started;
      await pollUntil(() => readGuestDisk(system), (v) => v.latest!.tick >= tStop + 2, 15_000, 'ticks after cont');
    });

    await t.test('guest agent: fsfreeze holds the data disk still while the counter goes on', async () => {
      const agent = await GuestAgentClient.connect(a.agentSocket!, { timeoutMs: 20_000 });
      agents.push(agent);
      await agent.ping();
      assert.equal(await agent.fsfreezeStatus(), 'thawed');
      // the guest rewrites /mnt/data/counter once a second: wait until the data disk has changed once
      const first = await sha256(data);
      await pollUntil(() => sha256(data), (h) => h !== first, 10_000, 'the data disk changes');
      const started = performance.now();
      assert.equal(await agent.fsfreezeFreeze(), 1);
      measured.fsfreezeMs = performance.now() - started;
      assert.equal(await agent.fsfreezeStatus(), 'frozen');
      const frozen = await sha256(data);
      const tickFrozen = (await readGuestDisk(system)).latest!.tick;
      await sleep(2500);
      assert.equal(await sha256(data), frozen, 'the frozen file system was written');
      assert.ok((await readGuestDisk(system)).latest!.tick > tickFrozen + 3, 'the raw-disk counter stopped during the freeze');
      const thawStart = performance.now();
      assert.equal(await agent.fsfreezeThaw(), 1);
      measured.fsthawMs = performance.now() - thawStart;
      await pollUntil(() => sha256(data), (h) => h !== frozen, 10_000, 'the data disk changes after thaw');
    });

    const systemCopy = join(dir, 'system-at-save.raw');
    const dataCopy = join(dir, 'data-at-save.raw');
    const stateFile = join(dir, 'state.vmstate');
    let tSave = 0;
    await t.test('save the memory and device state of the stopped guest, then continue it', async () => {
      await a.qemu.qmp.execute('stop');
      tSave = (await readGuestDisk(system)).latest!.tick;
      await copyFile(system, systemCopy); // the disks at the instant of the save, as a checkpoint keeps them
      await copyFile(data, dataCopy);
      const saved = await saveState(a.qemu.qmp, stateFile);
      measured.saveMs = saved.ms;
      measured.stateMiB = saved.bytes / 2 ** 20;
      assert.equal(saved.info.status, 'completed');
      assert.ok(saved.bytes > 1 << 20, `state of ${saved.bytes} bytes`);
      assert.equal((await a.qemu.qmp.execute('query-status')).status, 'postmigrate');
      await a.qemu.qmp.execute('cont');
      await pollUntil(() => readGuestDisk(system), (v) => v.latest!.tick >= tSave + 8, 20_000, 'ticks after the save');
      assert.equal((await a.qemu.qmp.execute('query-status')).status, 'running');
      await a.stop();
    });

    await t.test('restore: the in-memory counter continues from the saved value, not from the latest', async () => {
      const latestOfA = (await readGuestDisk(system)).latest!.tick;
      const bStart = performance.now();
      const b = await GuestVm.start({ image, dir, name: 'b', disks: rawDisks(systemCopy, dataCopy), agent: true, incoming: true });
      vms.push(b);
      const loaded = await loadState(b.qemu.qmp, stateFile);
      measured.restoreMs = loaded.ms;
      measured.restoreWithStartMs = performance.now() - bStart;
      assert.equal(loaded.status, 'paused');
      assert.equal((await readGuestDisk(systemCopy)).latest!.tick, tSave);
      await b.qemu.qmp.execute('cont');
      const after = await pollUntil(() => readGuestDisk(systemCopy), (v) => v.latest!.tick > tSave, 20_000, 'ticks after the restore');
      assert.deepEqual(after.boot, { boots: 1, id: ready.id }, 'no boot happened');
      assert.equal(after.latest!.id, ready.id);
      assert.ok(after.latest!.tick < latestOfA, `restored counter ${after.latest!.tick} should be below A's latest ${latestOfA}`);
      await b.tickAtLeast(tSave + 3);
      const printed = await b.serial.ticks();
      assert.ok(printed[0] === tSave || printed[0] === tSave + 1, `first tick after restore ${printed[0]}, saved ${tSave}`);
      assert.ok(printed.every((tick, i) => i === 0 || tick === printed[i - 1]! + 1));
      assert.doesNotMatch(await b.serial.text(), /diskchain-guest: ready/);

      const agent = await GuestAgentClient.connect(b.agentSocket!, { timeoutMs: 20_000 });
      agents.push(agent);
      await agent.ping(); // the agent restored with the guest answers on the new QEMU's socket

      const shutdown = b.qemu.qmp.waitForEvent<ShutdownData>('SHUTDOWN', { timeoutMs: 30_000 });
      const offStart = performance.now();
      assert.equal(await b.qemu.powerdown(30_000), true);
      measured.powerdownMs = performance.now() - offStart;
      assert.equal((await shutdown).data.guest, true);
      assert.deepEqual(b.qemu.exit, { code: 0, signal: null });
    });

    await t.test('a cold boot on the same disk counts a new boot and restarts the counter', async () => {
      const c = await GuestVm.start({ image, dir, name: 'c', disks: rawDisks(systemCopy, dataCopy) });
      vms.push(c);
      const again = await c.ready();
      assert.equal(again.boots, 2);
      assert.notEqual(again.id, ready.id);
      await c.tickAtLeast(2);
      assert.equal((await c.serial.ticks())[0], 1);
      const view = await pollUntil(() => readGuestDisk(systemCopy), (v) => v.latest?.id === again.id, 10_000, 'a tick of the new boot');
      assert.deepEqual(view.boot, { boots: 2, id: again.id });
      assert.ok(view.latest!.tick < tSave);
    });
    t.diagnostic(`measured: ${JSON.stringify(Object.fromEntries(Object.entries(measured).map(([k, v]) => [k, Math.round(v * 10) / 10])))}`);
  } finally {
    for (const agent of agents) await agent.close();
    for (const vm of vms) await vm.qemu.kill();
    await remove();
  }
});
