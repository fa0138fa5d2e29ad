/**
 * The power-cut model over a VM's saved state (docs/crash-safety.md, src/checkpoint/saved-state.ts):
 *
 * - vm save's files: the old state file removed, the state written into Saved/state.vmstate by another
 *   process and made durable with its folder (syncWrittenFile, as saveState does once QEMU reports the
 *   migration complete), then Saved/saved.json written atomically. The writer here is the one QEMU
 *   runs for its `exec:` migration (`cat > file`), fed a seeded stream instead of a guest's memory:
 *   no QEMU runs. Every state must hold no saved state, a stale one, or a valid one whose file is
 *   exactly what was written; a valid one once the save returned; and saving again succeeds.
 * - a checkpoint of a Saved VM (its state linked into Snapshots/<id>/, then carried to the new Now):
 *   every state is the old tree or the new one, before and after recovery, and after recovery Now's
 *   saved state is valid and whole (and so is the checkpoint's, once committed).
 * - applying that standard checkpoint to a VM that is not running (its state linked under a partial
 *   name, renamed into Saved/, then recorded): old or new tree; a saved state that is valid is the
 *   checkpoint's, whole; valid once apply returned; and apply run again succeeds.
 *
 * The checks bite: with the flush of the written state file dropped from the model, a state records
 * a saved state whose file never landed whole.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { openVm, type VirtualMachine } from '../src/api/vm.js';
import { VmFolder } from '../src/checkpoint/folder.js';
import { readSavedState, saveNowState, type SavedStateStatus } from '../src/checkpoint/saved-state.js';
import { dropFlushesUnder } from './helpers/power-cut-mutants.js';
import { recordOp, type FlushFilter, type PowerCutRecorder } from './helpers/power-cut-recorder.js';
import { runCrashStates, type CrashRun } from './helpers/power-cut-states.js';
import { qemuLikeWriter } from './helpers/qemu-state-writer.js';
import { randomBytesFrom } from './helpers/vhdx-util.js';
import { makeTemplate, recoverOldOrNew, signature, writeInto } from './helpers/vm-crash.js';

const DURABLE = new URL('../src/io/durable.js', import.meta.url);
/** Two memory states: not a whole number of sectors, as a migration stream is not. */
const STATE1 = randomBytesFrom(81, 256 * 1024 + 1000);
const STATE2 = randomBytesFrom(83, 192 * 1024 + 24);

let work: string;
/** The template VM (A -> B -> Now), Off. */
let plain: string;
/** The same, Saved (STATE1). */
let saved: string;
/** That, with a standard checkpoint S of it taken offline, then Now written (so applying S changes the VM). */
let withCheckpoint: string;
before(async () => {
  work = mkdtempSync(join(tmpdir(), 'dc-power-cut-saved-'));
  plain = join(work, 'plain');
  await makeTemplate(plain);
  saved = join(work, 'saved');
  cpSync(plain, saved, { recursive: true });
  await saveIn(saved, STATE1);
  withCheckpoint = join(work, 'with-checkpoint');
  cpSync(saved, withCheckpoint, { recursive: true });
  const vm = await openVm(withCheckpoint);
  try {
    await vm.checkpoint({ name: 'S' });
  } finally {
    await vm.close();
  }
  await writeInto(withCheckpoint, 'disk0', 0, 64 * 1024, 9);
});
after(() => rmSync(work, { recursive: true, force: true }));

async function saveIn(folder: string, data: Uint8Array): Promise<void> {
  const vm = await VmFolder.open(folder, 'write', 'vm save (test)');
  try {
    await saveNowState(vm, 'pc', qemuLikeWriter(data));
  } finally {
    await vm.close();
  }
}

async function savedStatus(folder: string): Promise<SavedStateStatus> {
  const vm = await VmFolder.open(folder, 'none', 'test');
  try {
    return await readSavedState(vm.realFolder, vm.manifest);
  } finally {
    await vm.close();
  }
}

/** Valid and exactly `data` (and, given, recorded from checkpoint `from`), or (unless `mustBeValid`) none or stale. */
function assertSaved(s: SavedStateStatus, data: Uint8Array, where: string, mustBeValid: boolean, from?: string): void {
  if (s.status !== 'valid') {
    assert.ok(!mustBeValid, `${where}: no valid saved state (${s.status === 'stale' ? s.reason : 'none'})`);
    return;
  }
  assert.ok(Buffer.from(readFileSync(s.file)).equals(data), `${where}: a valid saved state whose file is not what was saved`);
  if (from !== undefined) assert.equal(s.record.checkpoint, from, `${where}: the saved state is not the checkpoint's`);
}

async function saveUnderCuts(name: string, dropFlush?: FlushFilter): Promise<{ rec: PowerCutRecorder; run: CrashRun }> {
  const root = join(work, name);
  const folder = join(root, 'vm');
  cpSync(saved, folder, { recursive: true });
  const rec = await recordOp(root, () => saveIn(folder, STATE2), dropFlush);
  assertSaved(await savedStatus(folder), STATE2, 'without a cut', true);
  const run = await runCrashStates(rec, { seed: 85, samples: dropFlush ? 12 : 3, exhaustiveUpTo: 16, torn: true, ...(dropFlush ? { maxFailures: 1 } : {}) }, async (state) => {
    const s = await savedStatus(folder);
    // The old state (STATE1) may still be whole and valid until it is removed.
    if (s.status === 'valid' && Buffer.from(readFileSync(s.file)).equals(STATE1)) return;
    assertSaved(s, STATE2, 'after the cut', state.point === rec.events.length);
    if (dropFlush) return;
    await saveIn(folder, STATE2);
    assertSaved(await savedStatus(folder), STATE2, 'saved again', true);
  });
  return { rec, run };
}

test('power cut during vm save\'s files: no saved state, a stale one, or a valid and whole one; saving again succeeds', async (t) => {
  const { rec, run } = await saveUnderCuts('save');
  t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states`);
  assert.ok(rec.events.some((e) => e.kind === 'write' && e.data.length === STATE2.length), 'the model saw the state file written');
  assert.deepEqual(run.failures, []);
});

test('power cut during vm save\'s files with the state file\'s flush dropped: a state records a saved state that is not whole', async () => {
  const { rec, run } = await saveUnderCuts('save-mutant', dropFlushesUnder(DURABLE, 'syncWrittenFile', /syncFile\(/, 0));
  assert.equal(rec.droppedFlushes, 1);
  assert.equal(run.failures.length, 1);
});

/** Runs `op` on a copy of `template` under the model; every state old or new tree, before and after recovery, then `after` on it. */
async function vmOpUnderCuts(name: string, template: string, op: (vm: VirtualMachine) => Promise<unknown>, after: (folder: string, committed: boolean, last: boolean, index: number) => Promise<void>): Promise<{ rec: PowerCutRecorder; run: CrashRun }> {
  const root = join(work, name);
  const folder = join(root, 'vm');
  cpSync(template, folder, { recursive: true });
  const oldSig = await signature(folder);
  const vm = await openVm(folder);
  const rec = await recordOp(root, () => op(vm)).finally(() => vm.close());
  const newSig = await signature(folder);
  assert.notEqual(newSig, oldSig, `${name} changes the VM`);
  // Few points: each state is a recovery and a vm check of a two-disk VM with checkpoints.
  const run = await runCrashStates(rec, { seed: 87, samples: 1, exhaustiveUpTo: 2, torn: true, maxPoints: 6 }, async (state, index) => {
    const changed = await recoverOldOrNew(folder, name, oldSig, newSig);
    await after(folder, changed, state.point === rec.events.length, index);
  });
  return { rec, run };
}

test('power cut during a checkpoint of a Saved VM: old or new tree; after recovery Now\'s saved state is valid and whole', { timeout: 300_000 }, async (t) => {
  const { rec, run } = await vmOpUnderCuts('checkpoint-saved', saved, (vm) => vm.checkpoint({ name: 'S' }), async (folder, committed) => {
    assertSaved(await savedStatus(folder), STATE1, 'after recovery', true);
    if (!committed) return;
    const m = (await VmFolder.open(folder, 'none', 'test').then(async (v) => (await v.close(), v.manifest)));
    const s = m.checkpoints.find((c) => c.name === 'S')!;
    assert.ok(s.state !== null, 'S holds a memory state');
    assert.ok(Buffer.from(readFileSync(join(folder, ...s.state.split('/')))).equals(STATE1), 'the checkpoint\'s state file');
  });
  t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states`);
  assert.ok(rec.events.some((e) => e.kind === 'link' && e.path.endsWith('state.vmstate')), 'the model saw the state linked into the checkpoint');
  assert.deepEqual(run.failures, []);
});

test('power cut during apply of a standard checkpoint to a VM that is not running: the saved state is the checkpoint\'s, whole, or none; apply again succeeds', { timeout: 300_000 }, async (t) => {
  const { rec, run } = await vmOpUnderCuts('apply-saved', withCheckpoint, (vm) => vm.apply('S'), async (folder, committed, last, index) => {
    const vm = await openVm(folder);
    try {
      const s = vm.manifest.checkpoints.find((c) => c.name === 'S')!;
      // Before the commit, Now's own saved state (STATE1 too, from no checkpoint) may be valid still.
      assertSaved(await readSavedState(folder, vm.manifest), STATE1, 'after the cut', last, committed ? s.id : undefined);
      if (index % 2 !== 0) return;
      await vm.apply('S');
      assertSaved(await readSavedState(folder, vm.manifest), STATE1, 'apply run again', true, s.id);
    } finally {
      await vm.close();
    }
  });
  t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states`);
  assert.ok(rec.events.some((e) => e.kind === 'rename' && e.to.endsWith('Saved/state.vmstate')), 'the model saw the state renamed into Saved/');
  assert.deepEqual(run.failures, []);
});
