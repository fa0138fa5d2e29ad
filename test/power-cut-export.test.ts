/**
 * The power-cut model over `checkpoint export` (docs/crash-safety.md): a new VM folder is built under
 * `<folder>.diskchain-partial/` (its mark made durable first, each flattened disk created staged and
 * flushed, the Disks folder flushed, vm.json written atomically), then the staging folder is renamed
 * to the target and the parent folder flushed. Every state a cut may leave must have no target, or a
 * whole VM under it whose disks read as the checkpoint did (never a folder that has the name but not
 * the data), the whole VM once the export has returned; and the export run again must succeed (a
 * staging folder left behind is replaced), or be refused (EXISTS) because the first one finished.
 * The checks bite: with the flushes of the exported disks dropped from the model, a state has the
 * target with a disk whose data never landed.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { openVm } from '../src/api/vm.js';
import { DiskchainError } from '../src/io/errors.js';
import { PowerCutRecorder, type FlushFilter } from './helpers/power-cut-recorder.js';
import { crashPoints, runCrashStates, type CrashRun } from './helpers/power-cut-states.js';
import { makeTemplate, signature } from './helpers/vm-crash.js';
import { readWhole } from './helpers/vm-model.js';

let work: string;
let source: string;
let sourceSig: string;
let expected: Buffer[];
before(async () => {
  work = mkdtempSync(join(tmpdir(), 'dc-power-cut-export-'));
  source = join(work, 'vm');
  await makeTemplate(source);
  sourceSig = await signature(source);
  const vm = await openVm(source, { lock: 'none' });
  try {
    const b = vm.manifest.checkpoints.find((c) => c.name === 'B')!;
    expected = [await readWhole(vm, 'disk0', b.id), await readWhole(vm, 'disk1', b.id)];
  } finally {
    await vm.close();
  }
});
after(() => rmSync(work, { recursive: true, force: true }));

async function exportB(target: string): Promise<void> {
  const vm = await openVm(source, { lock: 'read' });
  try {
    await vm.export('B', target);
  } finally {
    await vm.close();
  }
}

/** The target is a VM with no checkpoints whose disks read as B did. */
async function assertWhole(target: string, where: string): Promise<void> {
  const out = await openVm(target, { lock: 'none' });
  try {
    assert.equal(out.manifest.checkpoints.length, 0, `${where}: the export has checkpoints`);
    for (const [i, d] of ['disk0', 'disk1'].entries()) assert.ok((await readWhole(out, d)).equals(expected[i]!), `${where}: exported ${d} does not read as B`);
  } finally {
    await out.close();
  }
}

async function exportUnderCuts(root: string, dropFlush?: FlushFilter): Promise<{ rec: PowerCutRecorder; run: CrashRun; again: number; refused: number }> {
  mkdirSync(root, { recursive: true });
  const target = join(root, 'out');
  const rec = PowerCutRecorder.start(root, dropFlush);
  try {
    await exportB(target);
  } finally {
    rec.stop();
  }
  await assertWhole(target, 'without a cut');
  let again = 0;
  let refused = 0;
  // The mutant: only the points after the staging folder's rename (where it must fail), stopping at the first failure.
  const renamed = rec.events.findIndex((e) => e.kind === 'rename' && e.to === target);
  const options = dropFlush ? { points: crashPoints(rec, 71).filter((k) => k > renamed), maxFailures: 1 } : { maxPoints: 24 };
  const run = await runCrashStates(rec, { seed: 71, samples: 2, exhaustiveUpTo: 8, torn: true, ...options }, async (state, index) => {
    if (existsSync(target)) await assertWhole(target, 'after the cut');
    else assert.ok(state.point < rec.events.length, 'the export returned, yet its folder was lost');
    if (dropFlush) return;
    if (existsSync(target)) {
      await assert.rejects(exportB(target), (e) => e instanceof DiskchainError && e.code === 'EXISTS', 'a finished export is made twice');
      refused++;
    } else if (index % 4 === 0) {
      // Every fourth state: a whole export per state would take minutes.
      await exportB(target);
      again++;
      await assertWhole(target, 'the export run again');
      assert.ok(!existsSync(`${target}.diskchain-partial`), 'a staging folder is left after the export ran again');
    }
  });
  return { rec, run, again, refused };
}

test('power cut during checkpoint export: no target or a whole VM; the export run again succeeds or is refused as done', { timeout: 300_000 }, async (t) => {
  const { rec, run, again, refused } = await exportUnderCuts(join(work, 'root'));
  t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states, ${again} run again, ${refused} refused as done`);
  assert.ok(rec.events.some((e) => e.kind === 'rename' && e.from.endsWith('out.diskchain-partial') && e.to.endsWith('out')), 'the model saw the staging folder renamed');
  assert.deepEqual(run.failures, []);
  assert.ok(again > 0 && refused > 0, 'states on both sides of the rename');
  assert.equal(await signature(source), sourceSig, 'the source VM changed');
});

test('power cut during checkpoint export with the exported disks\' flushes dropped: a state has the target with a disk that never landed', { timeout: 300_000 }, async () => {
  const { rec, run } = await exportUnderCuts(join(work, 'mutant'), ({ path }) => path.includes('/Virtual Hard Disks/'));
  assert.ok(rec.droppedFlushes > 0);
  assert.equal(run.failures.length, 1, 'a state names a target that is not whole');
});
