/**
 * A merge resume checks a VHD layer by its modification time among other things (merge-identity.ts):
 * a VHD's identity does not change when it is written. After a power cut the time a file shows is the
 * one its last fsync made durable; a writer that flushes with fdatasync (QEMU does) leaves a newer
 * time to the file system's next commit. Here the leaf was written last that way, so its time on disk
 * is older than the one stat shows when the merge starts: the merge must make the layers durable as
 * they stand before its journal records them, or a cut after the journal would turn the leaf's time
 * back and every resume would be refused although nothing was changed. Every state must read the
 * leaf's content, and the merge run again must finish.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { openDisk } from '../src/chain/open-disk.js';
import { merge } from '../src/ops/merge.js';
import { buildChain } from './helpers/merge-chain.js';
import { PowerCutRecorder } from './helpers/power-cut-recorder.js';
import { runCrashStates } from './helpers/power-cut-states.js';
import { readChain } from './helpers/read-chain.js';
import { assertBytesEqual, MIB, randomBytesFrom, tempDir } from './helpers/vhdx-util.js';

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir('diskchain-power-cut-times-')));
after(() => cleanup?.());

test('power cut during a VHD merge whose leaf was written with its time not yet durable: every state resumes and finishes', async (t) => {
  const root = join(dir, 'chain');
  const [, c1, c2, c3] = await buildChain(root, 'vhd', 37, 4 * MIB);
  // The time c3 shows on disk: the one before its last write (a minute back, well beyond a millisecond).
  const durable = join(dir, 'c3-durable-times');
  execFileSync('touch', ['-r', c3!, durable]);
  const past = Date.now() / 1000 - 60;
  utimesSync(durable, past, past);
  const leaf = await openDisk(c3!, { writable: true });
  try {
    await leaf.write(randomBytesFrom(5, 64 * 1024), 3 * MIB);
  } finally {
    await leaf.close();
  }
  const content = await readChain(c3!);
  const options = { into: c1!, checkpointBytes: MIB / 2 };
  const rec = PowerCutRecorder.start(root, undefined, new Map([[c3!, durable]]));
  try {
    await merge(c3!, options);
  } finally {
    rec.stop();
  }
  assert.ok(!existsSync(c3!) && !existsSync(c2!), 'the merge did not remove what it merged');
  const journal = `${c1}.diskchain-merge.json`;
  let resumed = 0;
  const run = await runCrashStates(rec, { seed: 45, samples: 2, exhaustiveUpTo: 8, maxPoints: 40 }, async (_state, i) => {
    const reader = existsSync(c3!) ? c3! : c1!;
    assertBytesEqual(await readChain(reader), content, `${reader} after the cut`);
    if (i % 3 !== 0 || !existsSync(journal)) return;
    await merge(c3!, options);
    resumed++;
    assertBytesEqual(await readChain(c1!), content, 'the target after the merge was run again');
    assert.ok(!existsSync(c3!) && !existsSync(journal), 'the merge run again finished');
  });
  t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states, ${resumed} resumed`);
  assert.deepEqual(run.failures, []);
  assert.ok(resumed >= 5, `only ${resumed} states were resumed`);
});
