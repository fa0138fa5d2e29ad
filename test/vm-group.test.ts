/**
 * Group checkpoints all or none, with failures injected in the second VM (DISKCHAIN_TEST_FAIL_AT,
 * src/checkpoint/test-points.ts) and with kill -9 at the group's boundaries: a group checkpoint and a
 * group removal either change every VM or none, and after recovery (either VM first) both agree.
 */
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { groupCheckpoint, groupRemove, openVm } from '../src/api/vm.js';
import { resetTestPoints } from '../src/checkpoint/test-points.js';
import { isDiskchainError } from '../src/io/errors.js';
import { dc, makeTemplate, recoverAndCheck, signature, writeInto } from './helpers/vm-crash.js';

/** Everything a failed operation must leave as it was: vm.json's bytes and the folder's files. */
function snapshot(folder: string): string {
  const files = readdirSync(folder, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name !== 'vm.lock')
    .map((e) => join(e.parentPath, e.name).slice(folder.length))
    .sort();
  return JSON.stringify(files) + readFileSync(join(folder, 'vm.json'), 'utf8');
}

async function withFailure<T>(label: string, fn: () => Promise<T>): Promise<unknown> {
  process.env.DISKCHAIN_TEST_FAIL_AT = label;
  resetTestPoints();
  try {
    await fn();
    return undefined;
  } catch (e) {
    return e;
  } finally {
    delete process.env.DISKCHAIN_TEST_FAIL_AT;
  }
}

const hasGroup = async (folder: string, group: string): Promise<boolean> => {
  const vm = await openVm(folder, { lock: 'none' });
  await vm.close();
  return vm.manifest.checkpoints.some((c) => c.group === group);
};

test('group checkpoint and group removal: a failure in the second VM leaves both VMs as they were', { timeout: 300_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-group-'));
  try {
    const a = join(work, 'a');
    const b = join(work, 'b');
    await makeTemplate(a);
    cpSync(a, b, { recursive: true });
    const before = [snapshot(a), snapshot(b)];
    const sigs = [await signature(a), await signature(b)];
    // Group create: the second VM fails while making its layers, or right after its record.
    for (const label of ['checkpoint-create:action:1#2', 'checkpoint-create:recorded#2']) {
      const e = await withFailure(label, () => groupCheckpoint([a, b], { name: 'G' }));
      assert.ok(isDiskchainError(e) && /injected failure/.test(e.message), `${label}: ${String(e)}`);
      assert.deepEqual([snapshot(a), snapshot(b)], before, `${label}: a VM changed`);
    }
    // Now it succeeds; Now moves on; a second group on top, so G's removal merges.
    const g = await groupCheckpoint([a, b], { name: 'G' });
    for (const f of [a, b]) await writeInto(f, 'disk0', 0, 65536, 9);
    await groupCheckpoint([a, b], { name: 'H' });
    const mid = [snapshot(a), snapshot(b)];
    const midSigs = [await signature(a), await signature(b)];
    // Group removal: the second VM fails after its record (before the decision nothing commits).
    const e = await withFailure('remove:recorded#2', () => groupRemove([a, b], g.group));
    assert.ok(isDiskchainError(e) && /injected failure/.test(e.message), String(e));
    assert.deepEqual([snapshot(a), snapshot(b)], mid, 'a VM changed');
    // A VM without the group's checkpoint: refused before anything changes in any VM.
    const lone = join(work, 'lone');
    cpSync(a, lone, { recursive: true });
    const solo = await openVm(lone);
    await solo.remove(solo.manifest.checkpoints.find((c) => c.group === g.group)!.id);
    await solo.close();
    await assert.rejects(groupRemove([a, lone], g.group), (e: unknown) => isDiskchainError(e) && e.code === 'CHECKPOINT_NOT_FOUND');
    assert.equal(snapshot(a), mid[0], 'the first VM changed although the second could not take part');
    // Success: both lose G, every other checkpoint and Now read as before (G's layers merged).
    // Success, although a failure follows the first member's decision: once decided, the group commits.
    let r: Awaited<ReturnType<typeof groupRemove>> | undefined;
    assert.equal(await withFailure('group:decided#1', async () => (r = await groupRemove([a, b], g.group))), undefined);
    r = r!;
    assert.deepEqual(r.vms.map((v) => v.result.removed.map((c) => c.name)), [['G'], ['G']]);
    assert.ok(r.vms.every((v) => v.result.merged.length === 2), 'G had one child per disk: merged');
    for (const [i, f] of [a, b].entries()) {
      assert.equal(await hasGroup(f, g.group), false);
      const without = (s: string): string => s.split('\n').filter((l) => !l.startsWith('G <-')).join('\n').replace(/<- G /g, '<- B ');
      assert.equal(await signature(f), without(midSigs[i]!), 'contents after the group removal');
      await recoverAndCheck(f, 'after the group removal');
    }
    assert.notDeepEqual(sigs, midSigs);
  } finally {
    delete process.env.DISKCHAIN_TEST_FAIL_AT;
    rmSync(work, { recursive: true, force: true });
  }
});

/** Boundaries of a group removal: before the decision, at it (one member decided), between and after the commits. */
const REMOVE_POINTS = ['remove:recorded', 'group:decided', 'remove:committed', 'remove:finished', 'collapse:copied'];

test('kill -9 during a group removal: both VMs lose the checkpoint or neither', { timeout: 300_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-group-rm-crash-'));
  try {
    const template = join(work, 'template');
    const twin = join(work, 'twin');
    await makeTemplate(template);
    cpSync(template, twin, { recursive: true });
    const g = await groupCheckpoint([template, twin], { name: 'G' });
    for (const f of [template, twin]) await writeInto(f, 'disk1', 4096, 8192, 11);
    const outcomes: boolean[] = [];
    for (const [i, point] of REMOVE_POINTS.entries()) {
      const a = join(work, 'a');
      const b = join(work, 'b');
      for (const [f, from] of [[a, template], [b, twin]] as const) {
        rmSync(f, { recursive: true, force: true });
        cpSync(from, f, { recursive: true });
      }
      const old = await signature(a);
      const r = dc(['checkpoint', 'remove', a, b, '--group', g.group], { DISKCHAIN_TEST_CRASH_AT: point });
      assert.equal(r.signal, 'SIGKILL', `killed at ${point}: ${r.stderr}`);
      const seen = await signature(a);
      for (const f of i % 2 === 0 ? [a, b] : [b, a]) await recoverAndCheck(f, `group removal, ${point}`);
      const has = [await hasGroup(a, g.group), await hasGroup(b, g.group)];
      assert.equal(has[0], has[1], `group removal killed at ${point}: one VM has the checkpoint, the other not`);
      for (const f of [a, b]) assert.deepEqual(readdirSync(join(f, 'journal')), []);
      // Whatever happened, Now and the other checkpoints read as before.
      const strip = (s: string): string => s.split('\n').filter((l) => !l.startsWith('G <-')).join('\n').replace(/<- G /g, '<- B ');
      assert.equal(strip(await signature(a)), strip(old), `${point}: contents changed`);
      if (seen !== old) assert.equal(has[0], false, `${point}: a committed removal was undone`);
      outcomes.push(!has[0]);
    }
    // Killed at the first record: none; once a member decided: both.
    assert.deepEqual(outcomes, [false, true, true, true, true], REMOVE_POINTS.join(', '));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
