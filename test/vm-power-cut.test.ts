/**
 * The power-cut model at VM level (docs/crash-safety.md, test/helpers/power-cut-*.ts): every write,
 * flush, creation, rename, removal and folder flush of a checkpoint operation is recorded, and each
 * state a power cut could leave (pending writes landed or not, torn by sectors, folder operations up
 * to a prefix) is put on disk. Each must be a VM that opens with the old tree or the new one, every
 * disk reading as that tree says, before any recovery; and after the next command (recovery, then
 * vm check) still old or new, never a committed change undone, with nothing left in the journal.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { openVm, type VirtualMachine } from '../src/api/vm.js';
import { PowerCutRecorder } from './helpers/power-cut-recorder.js';
import { runCrashStates } from './helpers/power-cut-states.js';
import { makeTemplate, recoverOldOrNew, signature } from './helpers/vm-crash.js';

const OPERATIONS: Array<[string, (vm: VirtualMachine) => Promise<unknown>]> = [
  ['checkpoint create', (vm) => vm.checkpoint({ name: 'C' })],
  ['apply with checkpoint-first', (vm) => vm.apply('A', { checkpointFirst: 'S' })],
  ['apply (Now discarded)', (vm) => vm.apply('A')],
  ['rename', (vm) => vm.rename('B', 'B2')],
];

test('power cut during VM operations: every state is the old tree or the new one, before and after recovery', { timeout: 900_000 }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-power-cut-'));
  try {
    const template = join(work, 'template');
    await makeTemplate(template);
    const oldSig = await signature(template);
    const root = join(work, 'root');
    for (const [label, op] of OPERATIONS) {
      rmSync(root, { recursive: true, force: true });
      cpSync(template, join(root, 'vm'), { recursive: true });
      const folder = join(root, 'vm');
      const vm = await openVm(folder);
      const rec = PowerCutRecorder.start(root);
      try {
        await op(vm);
      } finally {
        rec.stop();
        await vm.close();
      }
      const newSig = await signature(folder);
      assert.notEqual(newSig, oldSig, `${label} changes the VM`);
      const run = await runCrashStates(rec, { seed: 7, samples: 1, exhaustiveUpTo: 4, torn: true, maxPoints: 14 }, async () => {
        await recoverOldOrNew(folder, label, oldSig, newSig);
        // (The model keeps files only: an empty journal folder is not part of a state.)
        assert.deepEqual(existsSync(join(folder, 'journal')) ? readdirSync(join(folder, 'journal')) : [], [], 'records left after recovery');
      });
      t.diagnostic(`${label}: ${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states`);
      assert.deepEqual(run.failures, [], label);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
