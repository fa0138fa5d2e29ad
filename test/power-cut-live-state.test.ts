/**
 * The power-cut model over a live standard checkpoint's memory state (src/runtime/live-checkpoint.ts):
 * the transaction's prepare makes the checkpoint's config and children and flushes their folders; then,
 * the guest paused, QEMU writes Snapshots/<id>/state.vmstate (a new file, in a folder prepare already
 * flushed) and the commit names it in vm.json, in another folder. The worker's steps are run here
 * through the same transaction (runPlan, the state written in beforeCommit as the worker writes it
 * between prepare and commit) with QEMU's `exec:cat > file` writer fed seeded bytes: no QEMU runs.
 * Every state must be the old tree, or the new one with the checkpoint's state file whole, before and
 * after recovery. The checks bite, and show why saveState flushes the state file's folder
 * (syncWrittenFile): with that folder flush dropped from the model, a state commits a checkpoint
 * whose state file has no name.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { planCheckpoint } from '../src/checkpoint/create.js';
import { SNAPSHOTS_DIR, VmFolder } from '../src/checkpoint/folder.js';
import { runPlan } from '../src/checkpoint/transaction.js';
import { dropFlushesUnder } from './helpers/power-cut-mutants.js';
import { recordOp, type FlushFilter, type PowerCutRecorder } from './helpers/power-cut-recorder.js';
import { runCrashStates, type CrashRun } from './helpers/power-cut-states.js';
import { qemuLikeWriter } from './helpers/qemu-state-writer.js';
import { randomBytesFrom } from './helpers/vhdx-util.js';
import { makeTemplate, recoverAndCheck } from './helpers/vm-crash.js';

const DURABLE = new URL('../src/io/durable.js', import.meta.url);
const STATE = randomBytesFrom(91, 160 * 1024 + 8);

let work: string;
let template: string;
before(async () => {
  work = mkdtempSync(join(tmpdir(), 'dc-power-cut-live-state-'));
  template = join(work, 'template');
  await makeTemplate(template);
});
after(() => rmSync(work, { recursive: true, force: true }));

/** Checkpoint L's state file, when vm.json names L: it must be whole. Returns whether L is there. */
async function assertStateWhole(folder: string, where: string): Promise<boolean> {
  const vm = await VmFolder.open(folder, 'none', 'test');
  await vm.close();
  const l = vm.manifest.checkpoints.find((c) => c.name === 'L');
  if (!l) return false;
  const file = vm.path(l.state!);
  assert.ok(existsSync(file), `${where}: vm.json names checkpoint L, whose state file does not exist`);
  assert.ok(Buffer.from(readFileSync(file)).equals(STATE), `${where}: checkpoint L's state file is not what was written`);
  return true;
}

async function liveStateUnderCuts(name: string, dropFlush?: FlushFilter): Promise<{ rec: PowerCutRecorder; run: CrashRun; committed: number }> {
  const root = join(work, name);
  const folder = join(root, 'vm');
  cpSync(template, folder, { recursive: true });
  const vm = await VmFolder.open(folder, 'write', 'checkpoint create (test)');
  const rec = await recordOp(root, async () => {
    // As LiveCheckpointRun.begin plans a standard checkpoint.
    const { plan, checkpoint } = planCheckpoint(vm.manifest, { name: 'L', type: 'standard' });
    checkpoint.state = `${SNAPSHOTS_DIR}/${checkpoint.id}/state.vmstate`;
    plan.actions.splice(1, 0, { kind: 'state', file: checkpoint.state });
    await runPlan(vm, plan, { command: 'checkpoint create (test)', beforeCommit: () => qemuLikeWriter(STATE)(vm.path(checkpoint.state!)) });
  }, dropFlush).finally(() => vm.close());
  assert.ok(await assertStateWhole(folder, 'without a cut'));
  let committed = 0;
  const run = await runCrashStates(rec, { seed: 93, samples: 1, exhaustiveUpTo: 4, torn: true, maxPoints: 10, ...(dropFlush ? { maxFailures: 1 } : {}) }, async () => {
    if (await assertStateWhole(folder, 'before recovery')) committed++;
    if (dropFlush) return;
    await recoverAndCheck(folder, 'after the cut');
    await assertStateWhole(folder, 'after recovery');
  });
  return { rec, run, committed };
}

test('power cut during a live standard checkpoint\'s state and commit: the old tree, or the new one with its state file whole', { timeout: 300_000 }, async (t) => {
  const { rec, run, committed } = await liveStateUnderCuts('live');
  t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states, ${committed} committed`);
  assert.deepEqual(run.failures, []);
  assert.ok(committed > 0, 'no state after the commit');
});

test('power cut during a live standard checkpoint, the state file\'s folder flush dropped: a state commits a checkpoint whose state file has no name', { timeout: 300_000 }, async () => {
  const { rec, run } = await liveStateUnderCuts('live-mutant', dropFlushesUnder(DURABLE, 'syncWrittenFile', /syncFolder\(/, 0));
  assert.equal(rec.droppedFlushes, 1);
  assert.equal(run.failures.length, 1);
});
