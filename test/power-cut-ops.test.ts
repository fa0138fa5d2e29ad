/**
 * The power-cut model over the operations that rewrite disks and folders (docs/crash-safety.md):
 * merge (with its journal, hand-over and removals), setParent through reparent, and create /
 * createChild. Every write, flush, creation, rename, removal and folder flush is recorded; each crash
 * state is put on disk and must open and read what it read before (or, for a create, hold no file or a
 * whole one). For merges, states are also resumed by running the same merge again, which must finish
 * with the target alone reading the leaf's content and the merged files gone.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { createChild, createDisk } from '../src/api/create.js';
import { openDisk } from '../src/chain/open-disk.js';
import { merge } from '../src/ops/merge.js';
import { reparent } from '../src/ops/reparent.js';
import { buildChain } from './helpers/merge-chain.js';
import { readChain } from './helpers/read-chain.js';
import { PowerCutRecorder } from './helpers/power-cut-recorder.js';
import { runCrashStates } from './helpers/power-cut-states.js';
import { assertBytesEqual, MIB, tempDir } from './helpers/vhdx-util.js';

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir('diskchain-power-cut-ops-')));
after(() => cleanup?.());

const FORMATS = ['vhdx', 'vhd'] as const;

async function record<T>(root: string, op: () => Promise<T>): Promise<PowerCutRecorder> {
  const rec = PowerCutRecorder.start(root);
  try {
    await op();
  } finally {
    rec.stop();
  }
  return rec;
}

for (const format of FORMATS) {
  test(`power cut during a ${format.toUpperCase()} merge of two checkpoints: every state opens with the leaf's content, and the merge run again finishes it`, async (t) => {
    const root = join(dir, `merge-${format}`);
    const [, c1, c2, c3] = await buildChain(root, format, 31, 4 * MIB);
    const leafContent = await readChain(c3!);
    // A small checkpoint interval: the copy records its progress several times, so resumes start mid-copy.
    const options = { into: c1!, checkpointBytes: MIB / 2 };
    const rec = await record(root, () => merge(c3!, options));
    assert.ok(!existsSync(c3!) && !existsSync(c2!), 'the merge did not remove what it merged');
    let resumed = 0;
    const run = await runCrashStates(rec, { seed: 41, samples: 3, exhaustiveUpTo: 16, torn: true, maxPoints: 70 }, async (_state, i) => {
      // What a reader opens after the cut: the leaf while it exists, else the target, which then holds everything.
      const reader = existsSync(c3!) ? c3! : c1!;
      assertBytesEqual(await readChain(reader), leafContent, `${reader} after the cut`);
      if (i % 6 !== 0) return;
      if (existsSync(c3!) || existsSync(`${c1}.diskchain-merge.json`)) {
        await merge(c3!, options);
        resumed++;
      }
      assertBytesEqual(await readChain(c1!), leafContent, 'the target after the merge was run again');
      assert.ok(!existsSync(c3!) && !existsSync(c2!), 'a merged file is still there after the merge was run again');
      assert.ok(!existsSync(`${c1}.diskchain-merge.json`), 'the journal is still there after the merge was run again');
    });
    t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states, ${resumed} resumed`);
    assert.deepEqual(run.failures, []);
    assert.ok(resumed >= 10, `only ${resumed} states were resumed`);
  });

  test(`power cut during a ${format.toUpperCase()} merge of a checkpoint that has a child: the child is handed over, every state reads the same, and the merge run again finishes it`, async (t) => {
    const root = join(dir, `merge-handover-${format}`);
    const [, c1, c2, c3] = await buildChain(root, format, 33, 4 * MIB);
    const leafContent = await readChain(c3!);
    const options = { checkpointBytes: MIB };
    const rec = await record(root, () => merge(c2!, options));
    assert.ok(!existsSync(c2!), 'the merge did not remove what it merged');
    let resumed = 0;
    const run = await runCrashStates(rec, { seed: 43, samples: 3, exhaustiveUpTo: 16, torn: true, maxPoints: 60 }, async (_state, i) => {
      // c3 is never changed but by the hand-over (its parent locator and linkage): it reads the same throughout.
      assertBytesEqual(await readChain(c3!), leafContent, 'the child after the cut');
      if (i % 5 !== 0) return;
      if (existsSync(c2!) || existsSync(`${c1}.diskchain-merge.json`)) {
        await merge(c2!, options);
        resumed++;
      }
      assertBytesEqual(await readChain(c3!), leafContent, 'the child after the merge was run again');
      assert.ok(!existsSync(c2!), 'the merged file is still there after the merge was run again');
      assert.ok(!existsSync(`${c1}.diskchain-merge.json`), 'the journal is still there after the merge was run again');
    });
    t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states, ${resumed} resumed`);
    assert.deepEqual(run.failures, []);
    assert.ok(resumed >= 5, `only ${resumed} states were resumed`);
  });

  test(`power cut during a ${format.toUpperCase()} reparent (setParent): every state opens, reads the same, and names the old parent or the new one`, async (t) => {
    const root = join(dir, `reparent-${format}`);
    const [base, c1] = await buildChain(root, format, 51, 4 * MIB);
    const content = await readChain(c1!);
    // The new parent: the same disk under another name, in a subfolder (longer locators, so a VHD's
    // locator data moves and its footer with it).
    const moved = join(root, 'moved', `the-base-under-a-much-longer-name.${format}`);
    mkdirSync(dirname(moved));
    copyFileSync(base!, moved);
    const locatorsOf = async (): Promise<string> => {
      const d = await openDisk(c1!);
      try {
        return JSON.stringify(d.parent?.locators.map((l) => [l.key, l.path]));
      } finally {
        await d.close();
      }
    };
    const before = await locatorsOf();
    const rec = await record(root, () => reparent(c1!, moved));
    const afterwards = await locatorsOf();
    assert.notEqual(afterwards, before);
    const run = await runCrashStates(rec, { seed: 61, samples: 6, exhaustiveUpTo: 64, torn: true }, async () => {
      const now = await locatorsOf();
      assert.ok(now === before || now === afterwards, `the locators are neither the old nor the new ones: ${now}`);
      assertBytesEqual(await readChain(c1!), content, 'the child after the cut');
    });
    t.diagnostic(`${rec.barriers} flushes, ${run.points} crash points, ${run.states} states`);
    assert.deepEqual(run.failures, []);
  });

  test(`power cut during a ${format.toUpperCase()} create and createChild: no file, or a whole disk that reads as it should`, async (t) => {
    const root = join(dir, `create-${format}`);
    const [base] = await buildChain(root, format, 71, 4 * MIB);
    const baseContent = await readChain(base!);
    const fresh = join(root, `fresh.${format}`);
    const child = join(root, `child.a${format}`);
    const rec = await record(root, async () => {
      await (await createDisk(fresh, format, { diskType: 'dynamic', virtualSize: 3 * MIB })).close();
      await (await createChild(child, base!)).close();
    });
    const run = await runCrashStates(rec, { seed: 81, samples: 6, exhaustiveUpTo: 64, torn: true }, async () => {
      if (existsSync(fresh)) assertBytesEqual(await readChain(fresh), new Uint8Array(3 * MIB), `${fresh} after the cut`);
      if (existsSync(child)) assertBytesEqual(await readChain(child), baseContent, `${child} after the cut`);
      assertBytesEqual(await readChain(base!), baseContent, 'the parent after the cut');
    });
    t.diagnostic(`${rec.barriers} flushes, ${run.points} crash points, ${run.states} states`);
    assert.deepEqual(run.failures, []);
  });
}
