/**
 * The power-cut model over guest writes (docs/crash-safety.md): every write and flush of a seeded
 * stream into a VHDX or VHD (dynamic, and differencing over a parent full of data) is recorded; at
 * each crash point (both sides of every flush, and points between) the states a power cut may leave
 * (everything flushed, plus any subset of the rest, exhaustively when few, else sampled and torn at
 * 512-byte sectors) are put on disk, opened with the parents found as any reader finds them, and must
 * read, sector by sector, the acknowledged content or the data of a write issued since. Some states are
 * also opened writable (a VHDX log is replayed into the file, a VHD's footer repaired) and must read the
 * same, and must check without errors.
 *
 * The checker is shown to bite: dropping one flush from the model (the VHD's data flush before its BAT
 * entries are written; the VHDX flushes that order payload data before the log entry that maps it)
 * must produce a state that reads wrong.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { join } from 'node:path';
import { FileSource } from '../src/io/file-source.js';
import { detectFormat } from '../src/formats/registry.js';
import { assertOldOrNew, expectationAt, readChain } from './helpers/power-cut-disk.js';
import { recordWrites, SCENES, type DiskScene } from './helpers/power-cut-scenes.js';
import { runCrashStates, type CrashRun } from './helpers/power-cut-states.js';
import type { FlushFilter } from './helpers/power-cut-recorder.js';
import { dropFlushCall } from './helpers/power-cut-mutants.js';

const VHD_DISK = new URL('../src/formats/vhd/disk.js', import.meta.url);
const VHDX_LOG_WRITER = new URL('../src/formats/vhdx/log-writer.js', import.meta.url);

import { assertBytesEqual, describeFindings, tempDir } from './helpers/vhdx-util.js';

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir('diskchain-power-cut-')));
after(() => cleanup?.());

const ROUNDS = 5;

async function errorsOf(path: string): Promise<string[]> {
  const src = await FileSource.open(path);
  try {
    const findings = await (await detectFormat(src)).check(src);
    return findings.filter((f) => f.severity === 'error').length ? [describeFindings(findings)] : [];
  } finally {
    await src.close();
  }
}

async function crashWrites(s: DiskScene, seed: number, options: { dropFlush?: FlushFilter; maxFailures?: number; maxPoints?: number }): Promise<CrashRun & { barriers: number; dropped: number }> {
  const scene = join(dir, `${s.name.replace(/\W+/g, '-')}-${seed}${options.dropFlush ? '-mutant' : ''}`);
  const { rec, leaf, before } = await recordWrites(scene, s, seed, ROUNDS, options.dropFlush);
  const run = await runCrashStates(rec, { seed, samples: 6, torn: true, exhaustiveUpTo: 64, maxPoints: options.maxPoints ?? 70, maxFailures: options.maxFailures ?? 3 }, async (state, i) => {
    const expected = expectationAt(rec, state.point, before);
    const content = await readChain(leaf);
    assertOldOrNew(content, expected, 'read-only open');
    if (i % 4 === 0) {
      assert.deepEqual(await errorsOf(leaf), [], 'check finds errors');
      // Writable: the log is replayed into the file (VHDX), the footer put right (VHD); the same content after.
      assertBytesEqual(await readChain(leaf, true), content, 'content after a writable open');
      assert.deepEqual(await errorsOf(leaf), [], 'check finds errors after a writable open');
    }
  });
  return { ...run, barriers: rec.barriers, dropped: rec.droppedFlushes };
}

for (const [i, s] of SCENES.entries()) {
  test(`power cut during writes to a ${s.name}: every crash state opens and reads old or new, sector by sector`, async (t) => {
    const r = await crashWrites(s, 100 + i, {});
    t.diagnostic(`${r.barriers} flushes, ${r.points} crash points, ${r.states} states checked`);
    assert.deepEqual(r.failures, []);
    assert.ok(r.points >= 20 && r.states >= 100, `too little explored: ${r.points} points, ${r.states} states`);
  });
}

test('the checker bites: a VHD whose data flush before the BAT update is dropped leaves states that read wrong', async (t) => {
  const s = SCENES.find((x) => x.name === 'differencing VHD')!;
  // commitPending: flush the new blocks' data, then write the BAT entries and bitmaps, then flush.
  const r = await crashWrites(s, 7, { dropFlush: dropFlushCall(VHD_DISK, 'commitPending', 0), maxFailures: 1 });
  t.diagnostic(`${r.dropped} flushes dropped; first failure: ${r.failures[0] ?? 'none'}`);
  assert.ok(r.dropped > 0, 'no flush was dropped: the filter no longer matches the VHD block-allocation path');
  assert.equal(r.failures.length, 1, 'a VHD with its allocation flush removed passed the power-cut checker');
});

test('the checker bites: a VHDX whose log entry is not flushed before its BAT and bitmap pages are written in place leaves states that fail', async (t) => {
  const s = SCENES.find((x) => x.name.startsWith('differencing VHDX'))!;
  // LogWriter.commit: write the entry, flush, write its pages in place, flush (MS-VHDX §2.3). Without the
  // first flush, a cut can keep some in-place pages and lose the entry that would complete them: here a
  // payload entry PARTIALLY_PRESENT whose chunk's sector bitmap entry did not land.
  const r = await crashWrites(s, 9, { dropFlush: dropFlushCall(VHDX_LOG_WRITER, 'commit', 0), maxFailures: 1 });
  t.diagnostic(`${r.dropped} flushes dropped; first failure: ${r.failures[0] ?? 'none'}`);
  assert.ok(r.dropped > 0, 'no flush was dropped: the filter no longer matches the VHDX log writer');
  assert.equal(r.failures.length, 1, 'a VHDX with its log flush removed passed the power-cut checker');
});
