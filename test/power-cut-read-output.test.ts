/**
 * The power-cut model over `read -o FILE` (docs/crash-safety.md): the output is written as
 * `<FILE>.diskchain-partial`, flushed, renamed over FILE, and the folder flushed. Every state a cut
 * may leave must hold under FILE the old content (or nothing, for a new file) or the whole new one,
 * never a file that has the name but not the data; once the read has returned, the new one (a done
 * read is never lost); and the read run again in that state must succeed and leave the new content.
 * The checks bite: with the flush before the rename dropped from the model, a state names a file
 * whose data never landed.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { openChain } from '../src/chain/open-chain.js';
import { readToFile } from '../src/cli/read-to-file.js';
import { buildChain } from './helpers/merge-chain.js';
import { dropFlushCall } from './helpers/power-cut-mutants.js';
import { PowerCutRecorder, type FlushFilter } from './helpers/power-cut-recorder.js';
import { runCrashStates, type CrashRun } from './helpers/power-cut-states.js';
import { readChain } from './helpers/read-chain.js';
import { assertBytesEqual, MIB, randomBytesFrom, tempDir } from './helpers/vhdx-util.js';

const READ_TO_FILE = new URL('../src/cli/read-to-file.js', import.meta.url);

let dir: string;
let cleanup: () => void;
let leaf: string;
let content: Uint8Array;
before(async () => {
  ({ dir, cleanup } = tempDir('diskchain-power-cut-read-'));
  // 6 MiB: two chunks of the read, so two writes may land or not.
  leaf = (await buildChain(join(dir, 'chain'), 'vhdx', 61, 6 * MIB))[3]!;
  content = await readChain(leaf);
});
after(() => cleanup?.());

async function readOut(output: string): Promise<void> {
  const chain = await openChain(leaf);
  try {
    await readToFile(chain, 0, chain.virtualSize, output);
  } finally {
    await chain.close();
  }
}

/** read -o into `root/out.raw` (holding `old` first, unless undefined) under the model; checks every state. */
async function readUnderCuts(root: string, old: Uint8Array | undefined, dropFlush?: FlushFilter): Promise<{ rec: PowerCutRecorder; run: CrashRun; reruns: number }> {
  mkdirSync(root, { recursive: true });
  const output = join(root, 'out.raw');
  if (old) writeFileSync(output, old);
  const rec = PowerCutRecorder.start(root, dropFlush);
  try {
    await readOut(output);
  } finally {
    rec.stop();
  }
  assertBytesEqual(new Uint8Array(readFileSync(output)), content, 'the output');
  let reruns = 0;
  const run = await runCrashStates(rec, { seed: 63, samples: 4, exhaustiveUpTo: 32, torn: true, ...(dropFlush ? { maxFailures: 1 } : {}) }, async (state) => {
    const now = existsSync(output) ? new Uint8Array(readFileSync(output)) : undefined;
    const isNew = now !== undefined && Buffer.compare(now, content) === 0;
    const isOld = old === undefined ? now === undefined : now !== undefined && Buffer.compare(now, old) === 0;
    assert.ok(isNew || isOld, `${output} holds neither the old content nor the whole new one (${now === undefined ? 'absent' : `${now.length} bytes`})`);
    if (state.point === rec.events.length) assert.ok(isNew, 'the read returned, yet its output was lost');
    if (dropFlush) return;
    await readOut(output);
    reruns++;
    assertBytesEqual(new Uint8Array(readFileSync(output)), content, 'the output of the read run again');
    assert.ok(!existsSync(`${output}.diskchain-partial`), 'the read run again left its partial file');
  });
  return { rec, run, reruns };
}

test('power cut during read -o over an existing file: the old content or the whole new one, and the read run again succeeds', async (t) => {
  const { rec, run, reruns } = await readUnderCuts(join(dir, 'over'), randomBytesFrom(65, 3 * MIB + 512));
  t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states, ${reruns} reruns`);
  assert.ok(rec.events.some((e) => e.kind === 'rename' && e.to.endsWith('out.raw')), 'the model saw the rename');
  assert.ok(rec.events.filter((e) => e.kind === 'write').length >= 2, 'the model saw the data writes');
  assert.deepEqual(run.failures, []);
});

test('power cut during read -o into a new file: absent or whole, and the read run again succeeds', async (t) => {
  const { rec, run, reruns } = await readUnderCuts(join(dir, 'new'), undefined);
  t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states, ${reruns} reruns`);
  assert.deepEqual(run.failures, []);
});

test('power cut during read -o with the flush before the rename dropped: a state names an output whose data never landed', async () => {
  const { rec, run } = await readUnderCuts(join(dir, 'mutant'), randomBytesFrom(67, MIB), dropFlushCall(READ_TO_FILE, 'readToFile', 0));
  assert.equal(rec.droppedFlushes, 1);
  assert.equal(run.failures.length, 1, 'a state names an output that is not whole');
});
