/**
 * A checkpoint of a Saved VM, as Hyper-V takes it (real QEMU, TCG, one boot): a standard checkpoint
 * that carries the saved state, whatever the VM's checkpoint type, and the VM stays Saved. Started
 * again, the guest resumes (no boot) on the checkpoint's new, empty children, its counter going on;
 * the layers the checkpoint froze never change. Applied later, the checkpoint brings the guest back
 * running from the instant it was saved. "Create checkpoint and apply" of a Saved VM keeps its saved
 * state in the checkpoint taken first: applying that one resumes the guest where it was saved.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { withVm } from '../src/api/vm.js';
import { applyVm, checkpointVm, saveVm, startVm, stopVm, vmStatus } from '../src/api/vm-runtime.js';
import { pollUntil, requireGuest, tempFolder } from './helpers/guest.js';
import { guestDiskOf, killVm, makeGuestVm, serialOf } from './helpers/vm-runtime.js';

const sha256 = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');
const ticks = (folder: string): Promise<number[]> => serialOf(folder).ticks();

test('a checkpoint of a Saved VM keeps the saved state: the VM stays Saved, resumes, and the checkpoint applies running', { timeout: 300_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-savedcp-');
  const folder = await makeGuestVm(dir, image, 'vm', { checkpointType: 'production' });
  try {
    await startVm(folder);
    await serialOf(folder).waitFor(/diskchain-guest: ready boots=1/, 90_000);
    await pollUntil(() => ticks(folder), (x) => x.length >= 3, 30_000, 'ticks');
    assert.equal((await saveVm(folder)).state, 'Saved');
    const savedTick = (await ticks(folder)).at(-1)!;

    const r = await checkpointVm(folder, { name: 'of saved' });
    assert.equal(r.running, false);
    assert.equal(r.checkpoint.type, 'standard', 'a checkpoint of a Saved VM is a standard one, whatever the setting');
    const status = await vmStatus(folder);
    assert.equal(status.state, 'Saved', 'Now stays Saved');
    assert.ok(status.saved);
    assert.deepEqual(status.warnings, []);
    const m = await withVm(folder, { lock: 'none', command: 'test' }, async (vm) => vm.manifest);
    const c = m.checkpoints.find((x) => x.id === r.checkpoint.id)!;
    assert.ok(c.state, 'the checkpoint holds the saved state');
    assert.equal((await stat(join(folder, c.state))).size, (await stat(join(folder, 'Saved', 'state.vmstate'))).size);
    assert.notDeepEqual(Object.values(m.now.disks), Object.values(c.disks), "Now's leaves are the new children");
    const frozen = r.checkpoint.disks.map((d) => join(folder, d.file));
    const hashes = await Promise.all(frozen.map(sha256));
    assert.equal((await guestDiskOf(folder, c.id)).latest!.tick, savedTick);

    await startVm(folder);
    const resumed = await pollUntil(() => ticks(folder), (x) => x.length >= 3, 60_000, 'ticks after the start');
    assert.doesNotMatch(await serialOf(folder).text(), /diskchain-guest: ready/, 'resumed, not booted');
    assert.ok(resumed[0]! > savedTick && resumed[0]! <= savedTick + 2, `the counter goes on from ${savedTick}: ${resumed.slice(0, 3).join(', ')}`);
    const now = await pollUntil(() => guestDiskOf(folder), (v) => (v.latest?.tick ?? 0) > savedTick, 30_000, "the guest writes Now's children");
    assert.equal(now.boot?.boots, 1);
    assert.deepEqual(await Promise.all(frozen.map(sha256)), hashes, 'the frozen layers are unchanged');
    assert.equal((await guestDiskOf(folder, c.id)).latest!.tick, savedTick);

    const latest = (await ticks(folder)).at(-1)!;
    const applied = await applyVm(folder, c.id);
    assert.equal(applied.state, 'Running');
    const again = await pollUntil(() => ticks(folder), (x) => x.length >= 2, 60_000, 'ticks after the apply');
    assert.doesNotMatch(await serialOf(folder).text(), /diskchain-guest: ready/, 'restored, not booted');
    assert.ok(again[0]! > savedTick && again[0]! <= savedTick + 2 && again[0]! <= latest, `the counter goes on from the checkpoint's ${savedTick}, not from ${latest}: ${again.slice(0, 3).join(', ')}`);

    // "Create checkpoint and apply" of a Saved VM: the checkpoint taken first keeps the saved state too.
    await pollUntil(() => ticks(folder), (x) => x.length >= 3, 60_000, 'ticks before the second save');
    assert.equal((await saveVm(folder)).state, 'Saved');
    const secondTick = (await ticks(folder)).at(-1)!;
    const first = await applyVm(folder, c.id, { checkpointFirst: 'first' });
    assert.equal(first.state, 'Saved', "the applied checkpoint's state is Now's saved state");
    assert.equal(first.savedFirst?.type, 'standard');
    const back = await applyVm(folder, first.savedFirst!.id);
    assert.equal(back.state, 'Saved');
    await startVm(folder);
    const resumedAgain = await pollUntil(() => ticks(folder), (x) => x.length >= 2, 60_000, 'ticks after resuming the checkpoint taken first');
    assert.doesNotMatch(await serialOf(folder).text(), /diskchain-guest: ready/);
    assert.ok(resumedAgain[0]! > secondTick && resumedAgain[0]! <= secondTick + 2, `the counter goes on from the second save's ${secondTick}: ${resumedAgain.slice(0, 3).join(', ')}`);

    assert.equal((await stopVm(folder, { timeoutMs: 60_000 })).state, 'Off');
    const report = await withVm(folder, { lock: 'none', recover: false, command: 'test' }, (vm) => vm.check());
    assert.ok(report.clean, JSON.stringify(report.findings));
  } finally {
    await killVm(folder);
    await remove();
  }
});
