/**
 * The power-cut model over the operations that finish by giving a new file a name (docs/crash-safety.md):
 * convert (a chain into a new standalone disk, written as `<target>.diskchain-partial` and renamed to
 * the target once its close() has flushed it), rebase --standalone (a copy renamed over the child),
 * rebase --onto (data copied into the child, then setParent), and the synchronous atomic replacement
 * (writeFileAtomicSync) a checkpoint transaction records its steps with. Every state must read as
 * before the operation or as after it. The checks bite: with the flushes of the new file between the
 * end of its copy and the rename dropped from the model (copyChainInto's flush and close()'s; or
 * writeFileAtomicSync's fsync), some state names a file whose data never landed.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { convert } from '../src/api/convert.js';
import { openDisk } from '../src/chain/open-disk.js';
import { writeFileAtomicSync } from '../src/io/durable.js';
import { rebase } from '../src/ops/rebase.js';
import { buildChain } from './helpers/merge-chain.js';
import { dropFlushesUnder } from './helpers/power-cut-mutants.js';
import { recordOp, type FlushFilter, type PowerCutRecorder } from './helpers/power-cut-recorder.js';
import { crashPoints, runCrashStates, type CrashRun, type StateOptions } from './helpers/power-cut-states.js';
import { readChain } from './helpers/read-chain.js';
import { assertBytesEqual, MIB, tempDir } from './helpers/vhdx-util.js';

const DURABLE = new URL('../src/io/durable.js', import.meta.url);

let dir: string;
let cleanup: () => void;
before(() => ({ dir, cleanup } = tempDir('diskchain-power-cut-rename-')));
after(() => cleanup?.());

const FORMATS = ['vhdx', 'vhd'] as const;
const pristine = new Map<string, string[]>();

/** base <- c1 <- c2 <- c3, built once per format and copied into each run's folder. */
async function chainIn(root: string, format: 'vhdx' | 'vhd'): Promise<string[]> {
  if (!pristine.has(format)) pristine.set(format, await buildChain(join(dir, `pristine-${format}`), format, 91, 4 * MIB));
  mkdirSync(root, { recursive: true });
  cpSync(join(dir, `pristine-${format}`), root, { recursive: true });
  return pristine.get(format)!.map((p) => join(root, p.slice(p.lastIndexOf('/') + 1)));
}

/**
 * The mutant: every flush of the file whose name holds `part` (as made, staged) once its copy is done (the operation reported
 * all its progress), as if the flush before the rename were missing. Give the operation `onProgress`.
 */
function dropFlushesAfterCopy(part: string): { dropFlush: FlushFilter; onProgress: (done: number, total: number) => void } {
  let copied = false;
  return { dropFlush: ({ path }) => copied && path.includes(part), onProgress: (done, total) => void (copied ||= done === total) };
}

/** The options for a run: with a mutant, only the points from the final rename on (where it must fail), stopping at the first failure. */
function runOptions(rec: PowerCutRecorder, base: StateOptions & { maxPoints: number }, mutant: boolean): StateOptions & { points?: number[]; maxFailures?: number } {
  if (!mutant) return base;
  const rename = rec.events.map((e) => e.kind).lastIndexOf('rename');
  return { ...base, points: crashPoints(rec, base.seed).filter((k) => k > rename), maxFailures: 1 };
}

async function parentLocators(path: string): Promise<string> {
  const d = await openDisk(path);
  try {
    return JSON.stringify(d.parent?.locators.map((l) => [l.key, l.path]) ?? null);
  } finally {
    await d.close();
  }
}

/** Converts c3's chain into flat.<format> in `root` under the model; every state: the source reads the same, the target is absent or whole. */
async function convertUnderCuts(root: string, format: 'vhdx' | 'vhd', mutant = false): Promise<{ rec: PowerCutRecorder; run: CrashRun }> {
  const [, , , c3] = await chainIn(root, format);
  const content = await readChain(c3!);
  const target = join(root, `flat.${format}`);
  const m = mutant ? dropFlushesAfterCopy('.diskchain-partial') : undefined;
  const rec = await recordOp(root, () => convert(c3!, target, { format, ...(m ? { onProgress: m.onProgress } : {}) }), m?.dropFlush);
  assertBytesEqual(await readChain(target), content, 'the converted disk');
  const run = await runCrashStates(rec, runOptions(rec, { seed: 93, samples: 3, exhaustiveUpTo: 16, torn: true, maxPoints: 24 }, mutant), async () => {
    assertBytesEqual(await readChain(c3!), content, 'the source after the cut');
    if (existsSync(target)) assertBytesEqual(await readChain(target), content, `${target} after the cut`);
  });
  return { rec, run };
}

/** Makes c3 standalone in `root` under the model; every state: c3 reads the same, on its old parents or on none. */
async function standaloneUnderCuts(root: string, format: 'vhdx' | 'vhd', mutant = false): Promise<{ rec: PowerCutRecorder; run: CrashRun }> {
  const [, , , c3] = await chainIn(root, format);
  const content = await readChain(c3!);
  const m = mutant ? dropFlushesAfterCopy('.diskchain-rebase.tmp') : undefined;
  const rec = await recordOp(root, () => rebase(c3!, { standalone: true, ...(m ? { onProgress: m.onProgress } : {}) }), m?.dropFlush);
  assert.equal(await parentLocators(c3!), 'null', 'c3 is standalone');
  const run = await runCrashStates(rec, runOptions(rec, { seed: 95, samples: 3, exhaustiveUpTo: 16, torn: true, maxPoints: 24 }, mutant), async () => {
    assertBytesEqual(await readChain(c3!), content, 'the child after the cut');
  });
  return { rec, run };
}

for (const format of FORMATS) {
  const F = format.toUpperCase();
  test(`power cut during a convert of a ${F} chain: the target is absent or whole, the source reads the same`, async (t) => {
    const { rec, run } = await convertUnderCuts(join(dir, `convert-${format}`), format);
    t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states`);
    assert.ok(rec.events.some((e) => e.kind === 'rename' && e.to.endsWith(`flat.${format}`)), 'the model saw the final rename');
    assert.deepEqual(run.failures, []);
  });

  test(`power cut during a convert of a ${F} chain, the flush before the rename dropped: a state names a target whose data never landed`, async () => {
    const { rec, run } = await convertUnderCuts(join(dir, `convert-mutant-${format}`), format, true);
    assert.ok(rec.droppedFlushes > 0, 'the mutant dropped the flushes before the rename');
    assert.equal(run.failures.length, 1, 'a state names a target that does not read whole');
  });

  test(`power cut during rebase --standalone of a ${F} checkpoint: the child reads the same in every state`, async (t) => {
    const { rec, run } = await standaloneUnderCuts(join(dir, `standalone-${format}`), format);
    t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states`);
    assert.ok(rec.events.some((e) => e.kind === 'rename' && e.to.endsWith(`c3.a${format}`)), 'the model saw the rename over the child');
    assert.deepEqual(run.failures, []);
  });

  test(`power cut during rebase --standalone of a ${F} checkpoint, the flush before the rename dropped: a state loses the child's content`, async () => {
    const { rec, run } = await standaloneUnderCuts(join(dir, `standalone-mutant-${format}`), format, true);
    assert.ok(rec.droppedFlushes > 0, 'the mutant dropped the flushes before the rename');
    assert.equal(run.failures.length, 1, 'a state reads wrong');
  });

  test(`power cut during rebase --onto of a ${F} checkpoint (copy, then setParent): every state reads the same and names the old parent or the new one`, async (t) => {
    const root = join(dir, `onto-${format}`);
    const [, c1, , c3] = await chainIn(root, format);
    const content = await readChain(c3!);
    const before = await parentLocators(c3!);
    const rec = await recordOp(root, () => rebase(c3!, { onto: c1! }));
    const afterwards = await parentLocators(c3!);
    assert.notEqual(afterwards, before);
    const run = await runCrashStates(rec, { seed: 97, samples: 3, exhaustiveUpTo: 16, torn: true, maxPoints: 24 }, async () => {
      const now = await parentLocators(c3!);
      assert.ok(now === before || now === afterwards, `the locators are neither the old nor the new ones: ${now}`);
      assertBytesEqual(await readChain(c3!), content, 'the child after the cut');
    });
    t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states`);
    assert.deepEqual(run.failures, []);
  });
}

/** Three synchronous replacements of a record under the model; every state holds one of the texts, whole. */
async function syncRecordUnderCuts(root: string, dropFlush?: FlushFilter): Promise<{ rec: PowerCutRecorder; run: CrashRun }> {
  mkdirSync(root, { recursive: true });
  const path = join(root, 'record.json');
  const texts = [0, 1, 2, 3].map((step) => `${JSON.stringify({ step, padding: 'x'.repeat(700 * step) })}\n`);
  writeFileSync(path, texts[0]!);
  const rec = await recordOp(root, async () => {
    for (const text of texts.slice(1)) writeFileAtomicSync(path, text);
  }, dropFlush);
  const run = await runCrashStates(rec, { seed: 99, exhaustiveUpTo: 64, ...(dropFlush ? { maxFailures: 1 } : {}) }, async () => {
    const now = readFileSync(path, 'utf8');
    assert.ok(texts.includes(now), `record.json holds none of the texts written: ${JSON.stringify(now.slice(0, 40))}`);
  });
  return { rec, run };
}

test('power cut during writeFileAtomicSync: the model sees it, and every state holds the old text or a new one, whole', async (t) => {
  const { rec, run } = await syncRecordUnderCuts(join(dir, 'sync-record'));
  t.diagnostic(`${rec.barriers} flushes and folder flushes, ${run.points} crash points, ${run.states} states`);
  assert.equal(rec.events.filter((e) => e.kind === 'rename').length, 3, 'the model saw each replacement');
  assert.deepEqual(run.failures, []);
});

test('power cut during writeFileAtomicSync with its fsync dropped: a state names a record whose text never landed', async () => {
  const { rec, run } = await syncRecordUnderCuts(join(dir, 'sync-record-mutant'), dropFlushesUnder(DURABLE, 'writeFileAtomicSync', /kind: 'flush-done'/, 0));
  assert.equal(rec.droppedFlushes, 3);
  assert.equal(run.failures.length, 1);
});
