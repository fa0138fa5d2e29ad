/**
 * kill -9 of the VM's worker in the middle of a live checkpoint (real QEMU, TCG; the worker kills
 * itself at a named step, DISKCHAIN_TEST_CRASH_AT): QEMU dies with it, the folder opens consistent
 * (the old tree or the new one, nothing half-made), `vm check --repair` settles the interrupted
 * operation, and the VM starts again and runs. Twice: with the guest paused before the commit (rolled
 * back: no checkpoint) and right after the commit (finished: the checkpoint is there).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { withVm } from '../src/api/vm.js';
import { checkpointVm, startVm, stopVm, vmStatus } from '../src/api/vm-runtime.js';
import { processAlive } from '../src/runtime/run-record.js';
import { pollUntil, requireGuest, tempFolder } from './helpers/guest.js';
import { checkpointNames, guestDiskOf, killVm, makeGuestVm, serialOf } from './helpers/vm-runtime.js';

test('kill -9 of the worker mid-checkpoint, then vm check --repair leaves a working VM', { timeout: 300_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-crash-');
  const folder = await makeGuestVm(dir, image, 'vm', { checkpointType: 'standard' });
  try {
    for (const [at, kept] of [['live-checkpoint:paused', false], ['checkpoint-create:committed', true]] as const) {
      await t.test(`crash at ${at}: ${kept ? 'the checkpoint is finished' : 'rolled back'}`, async () => {
        const s = await startVm(folder, { env: { ...process.env, DISKCHAIN_TEST_CRASH_AT: at } });
        await pollUntil(() => serialOf(folder).ticks(), (x) => x.length >= 2, 90_000, 'ticks');
        await assert.rejects(checkpointVm(folder, { name: `crash ${at}` }));
        await pollUntil(async () => processAlive(s.workerPid!) || processAlive(s.qemuPid!), (alive) => !alive, 20_000, 'worker and QEMU gone');
        assert.match((await vmStatus(folder)).stale ?? '', /died while the VM was Running/);
        const before = await withVm(folder, { lock: 'none', recover: false, command: 'test' }, (vm) => vm.check());
        assert.ok(before.findings.length > 0, 'the interrupted operation is reported');
        const repaired = await withVm(folder, { lock: 'write', recover: false, command: 'test' }, (vm) => vm.check({ repair: true }));
        assert.ok(repaired.repaired!.recovered.length >= 1);
        const after = await withVm(folder, { lock: 'none', recover: false, command: 'test' }, (vm) => vm.check());
        assert.ok(after.clean, JSON.stringify(after.findings));
        assert.equal((await checkpointNames(folder)).includes(`crash ${at}`), kept);

        await startVm(folder);
        await serialOf(folder).waitFor(/diskchain-guest: ready/, 90_000);
        const boot = await pollUntil(() => guestDiskOf(folder), (v) => (v.latest?.tick ?? 0) >= 2 && v.latest!.id === v.boot?.id, 30_000, 'the guest writes Now');
        assert.ok(boot.boot!.boots >= 2, 'a cold boot after the crash');
        assert.equal((await stopVm(folder)).state, 'Off');
      });
    }
  } finally {
    await killVm(folder);
    await remove();
  }
});
