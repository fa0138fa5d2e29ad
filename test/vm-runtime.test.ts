/**
 * The VM worker on real QEMU (TCG) with the test guest: start (detached), status, the VM lock held
 * while it runs, pause/resume, save and the resume from the saved state (the in-memory counter goes
 * on, no boot), ACPI stop, automatic checkpoints (one at start, removed at the clean shutdown), and a dead worker and a dead QEMU detected and reported. One VM, booted
 * once; later starts resume its saved state or need no guest to be ready.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { withVm } from '../src/api/vm.js';
import { pauseVm, resumeVm, saveVm, startVm, stopVm, vmStatus } from '../src/api/vm-runtime.js';
import { isDiskchainError } from '../src/io/errors.js';
import { processAlive } from '../src/runtime/run-record.js';
import { pollUntil, requireGuest, tempFolder } from './helpers/guest.js';
import { checkpointNames, guestDiskOf, killVm, makeGuestVm, serialOf } from './helpers/vm-runtime.js';

const lastTick = async (folder: string): Promise<number> => (await serialOf(folder).ticks()).at(-1) ?? 0;

test('vm start/pause/resume/save/start/stop on QEMU, a dead worker and a dead QEMU reported', { timeout: 300_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-rt-');
  const folder = await makeGuestVm(dir, image, 'vm', { automaticCheckpoints: true });
  try {
    assert.equal((await vmStatus(folder)).state, 'Off');

    let started = await startVm(folder);
    await t.test('start: Running, with the worker and QEMU pids; the guest boots from Now over NBD', async () => {
      assert.equal(started.state, 'Running');
      assert.ok(started.workerPid !== null && processAlive(started.workerPid));
      assert.ok(started.qemuPid !== null && processAlive(started.qemuPid));
      assert.equal(started.accel, 'tcg');
      const s = await vmStatus(folder);
      assert.equal(s.state, 'Running');
      assert.equal(s.workerPid, started.workerPid);
      assert.ok(s.uptimeMs !== null && s.uptimeMs >= 0);
      await serialOf(folder).waitFor(/diskchain-guest: ready boots=1 .* agent=yes data=yes/, 90_000);
      await pollUntil(() => lastTick(folder), (n) => n >= 3, 30_000, 'ticks');
      await assert.rejects(startVm(folder), (e: unknown) => isDiskchainError(e) && e.code === 'VM_STATE');
      const names = await checkpointNames(folder);
      assert.equal(names.length, 1);
      assert.match(names[0]!, /^Automatic Checkpoint - vm - /);
    });

    await t.test('the worker holds the VM: an offline operation is VM_BUSY', async () => {
      await assert.rejects(
        withVm(folder, { command: 'test' }, (vm) => vm.checkpoint()),
        (e: unknown) => isDiskchainError(e) && e.code === 'VM_BUSY',
      );
    });

    await t.test('pause stops the counter, resume continues it', async () => {
      const paused = await pauseVm(folder);
      assert.equal(paused.state, 'Paused');
      assert.equal((await vmStatus(folder)).state, 'Paused');
      const atPause = await lastTick(folder);
      await sleep(800);
      assert.equal(await lastTick(folder), atPause);
      await assert.rejects(pauseVm(folder), (e: unknown) => isDiskchainError(e) && e.code === 'VM_STATE');
      assert.equal((await resumeVm(folder)).state, 'Running');
      await pollUntil(() => lastTick(folder), (n) => n >= atPause + 2, 30_000, 'ticks after resume');
    });

    let savedTick = 0;
    await t.test('save: Saved, QEMU gone; start resumes the guest where it was (no boot)', async () => {
      const qemuPid = started.qemuPid!;
      const saved = await saveVm(folder);
      assert.equal(saved.state, 'Saved');
      savedTick = await lastTick(folder);
      await pollUntil(async () => processAlive(qemuPid) || processAlive(started.workerPid!), (alive) => !alive, 20_000, 'worker and QEMU gone');
      const s = await vmStatus(folder);
      assert.equal(s.state, 'Saved');
      assert.ok(s.saved);
      assert.equal(s.workerPid, null);
      await assert.rejects(pauseVm(folder), (e: unknown) => isDiskchainError(e) && e.code === 'VM_STATE');

      started = await startVm(folder);
      assert.equal(started.state, 'Running');
      assert.equal((await vmStatus(folder)).saved, null);
      await pollUntil(() => serialOf(folder).ticks(), (ticks) => ticks.length >= 2, 30_000, 'ticks after the restore');
      const ticks = await serialOf(folder).ticks();
      const log = await serialOf(folder).text();
      assert.doesNotMatch(log, /diskchain-guest: ready/, 'a restore does not boot');
      assert.equal((await checkpointNames(folder)).length, 1, 'a resume takes no automatic checkpoint');
      assert.ok(ticks[0]! >= savedTick && ticks[0]! <= savedTick + 1, `the counter goes on from ${savedTick}: ${ticks.slice(0, 3).join(', ')}`);
    });

    await t.test('stop: the ACPI button; Off; the disk holds the guest\'s records', async () => {
      const stopped = await stopVm(folder, { timeoutMs: 60_000 });
      assert.equal(stopped.state, 'Off');
      assert.equal(stopped.reason, null);
      assert.deepEqual(await checkpointNames(folder), [], 'the automatic checkpoint is removed at a clean shutdown');
      const s = await vmStatus(folder);
      assert.equal(s.state, 'Off');
      assert.equal(s.stale, null);
      const disk = await guestDiskOf(folder);
      assert.equal(disk.boot?.boots, 1);
      assert.ok(disk.latest!.tick > savedTick, `disk tick ${disk.latest?.tick} after ${savedTick}`);
      await assert.rejects(stopVm(folder), (e: unknown) => isDiskchainError(e) && e.code === 'VM_STATE');
    });

    await t.test('kill -9 of the worker: QEMU dies with it, status reports the stale run/, the folder is consistent, a new start works', async () => {
      const s1 = await startVm(folder);
      process.kill(s1.workerPid!, 'SIGKILL');
      await pollUntil(async () => processAlive(s1.qemuPid!), (alive) => !alive, 20_000, 'QEMU ends with its worker');
      const s = await vmStatus(folder);
      assert.equal(s.state, 'Off');
      assert.match(s.stale ?? '', new RegExp(`worker \\(pid ${s1.workerPid}\\) died while the VM was Running`));
      const report = await withVm(folder, { lock: 'none', recover: false, command: 'test' }, (vm) => vm.check());
      assert.ok(report.clean, JSON.stringify(report.findings));

      const s2 = await startVm(folder);
      assert.ok(s2.warnings.some((w) => w.includes(`previous worker (pid ${s1.workerPid})`)), s2.warnings.join('; '));
      process.kill(s2.qemuPid!, 'SIGKILL');
      const off = await pollUntil(() => vmStatus(folder), (x) => x.state === 'Off' && x.workerPid === null, 30_000, 'Off after QEMU died');
      assert.match(off.reason ?? '', /QEMU exited unexpectedly \(signal SIGKILL\)/);
      assert.equal(off.stale, null);
      assert.match(await readFile(join(folder, 'run', 'worker.json'), 'utf8'), /"state": "Off"/);
    });
  } finally {
    await killVm(folder);
    await remove();
  }
});
