/**
 * Group checkpoints of running VMs on real QEMU (TCG), two test guests booted once: vm-a (standard
 * checkpoints: memory saved) and vm-b (production: the guest agent freezes its ext2).
 *  - a group checkpoint of both: one group id, each frozen layer unchanged afterwards, the guests'
 *    later writes only in the new children, both running the same boot, the longest pause reported;
 *  - a failure injected in vm-a's phase (its worker runs with DISKCHAIN_TEST_FAIL_AT): neither keeps
 *    the checkpoint, both run on;
 *  - the CLI's output (each pause, the longest; text and --json);
 *  - the coordinator (the CLI, a process of its own) killed -9 at an event: before the decision (both roll back)
 *    and after it (both commit); both run on, no record left;
 *  - vm-a's worker killed -9 in its phase (DISKCHAIN_TEST_CRASH_AT): vm-b rolls back and runs on;
 *    vm-a's next start rolls its member back (a cold boot);
 *  - both stopped: `vm check` clean.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { groupCheckpoint, withVm } from '../src/api/vm.js';
import { startVm, stopVm, vmStatus } from '../src/api/vm-runtime.js';
import { CLI } from './helpers/cli.js';
import { pollUntil, requireGuest, tempFolder } from './helpers/guest.js';
import { guestDiskOf, killVm, makeGuestVm, serialOf } from './helpers/vm-runtime.js';

const sha256 = async (path: string): Promise<string> => createHash('sha256').update(await readFile(path)).digest('hex');
const lastTick = async (folder: string): Promise<number> => (await serialOf(folder).ticks()).at(-1) ?? 0;
const journal = (folder: string): Promise<string[]> => readdir(join(folder, 'journal')).catch(() => []);
const groupsOf = (folder: string): Promise<Array<{ name: string; group: string | null }>> => withVm(folder, { lock: 'none', command: 'test' }, async (vm) => vm.manifest.checkpoints.map((c) => ({ name: c.name, group: c.group })));

/** `diskchain checkpoint create <vm>...` (the CLI is the coordinator); `crashAt`: it kills itself (SIGKILL) there. */
function cli(args: string[], crashAt?: string): Promise<{ signal: string | null; code: number | null; stdout: string }> {
  const child = spawn(process.execPath, [CLI, 'checkpoint', 'create', ...args], { env: { ...process.env, ...(crashAt ? { DISKCHAIN_TEST_CRASH_AT: crashAt } : {}) }, stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ signal, code, stdout })));
}

test('group checkpoints of two running VMs: all or none, both guests run on', { timeout: 420_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-lgroup-');
  const a = await makeGuestVm(dir, image, 'vm-a', { checkpointType: 'standard' });
  const b = await makeGuestVm(dir, image, 'vm-b', { checkpointType: 'production' });
  const both = [a, b];
  const pauses: number[] = [];
  try {
    // vm-a's second group checkpoint fails in its phase (after the guest paused).
    await Promise.all([startVm(a, { env: { ...process.env, DISKCHAIN_TEST_FAIL_AT: 'live-group:member-paused#2' } }), startVm(b)]);
    for (const f of both) await serialOf(f).waitFor(/diskchain-guest: ready boots=1 .* agent=yes/, 120_000);
    for (const f of both) await pollUntil(() => lastTick(f), (n) => n >= 2, 60_000, 'ticks');

    /** Both guests go on ticking, the same boot (never booted again). */
    const bothRunOn = async (what: string): Promise<void> => {
      const before = await Promise.all(both.map(lastTick));
      for (const [i, f] of both.entries()) {
        assert.equal((await vmStatus(f)).state, 'Running', `${f} ${what}`);
        await pollUntil(() => lastTick(f), (n) => n >= before[i]! + 2, 60_000, `${f} ticks ${what}`);
        assert.equal((await serialOf(f).text()).match(/diskchain-guest: ready/g)?.length, 1, `${f}: one boot`);
      }
    };

    await t.test('both paused together, checkpointed under one group id, both resumed', async () => {
      const r = await groupCheckpoint(both, { name: 'g1' });
      assert.equal(r.checkpoints.length, 2);
      const [ca, cb] = r.checkpoints;
      assert.ok(ca!.running && cb!.running);
      assert.equal(ca!.checkpoint.type, 'standard');
      assert.ok(ca!.stateBytes !== null && ca!.stateBytes > 1 << 20);
      assert.equal(cb!.checkpoint.type, 'production');
      assert.equal(cb!.fallback, null);
      assert.equal(r.pauseMs, Math.max(ca!.pauseMs!, cb!.pauseMs!));
      assert.ok(r.pauseMs! > 0);
      pauses.push(r.pauseMs!);
      for (const c of r.checkpoints) assert.equal(c.checkpoint.group, r.group);
      const frozen = await Promise.all(r.checkpoints.map(async (c) => ({ folder: c.folder, id: c.checkpoint.id, tick: (await guestDiskOf(c.folder, c.checkpoint.id)).latest!.tick, files: c.checkpoint.disks.map((d) => join(c.folder, d.file)) })));
      const hashes = await Promise.all(frozen.map((f) => Promise.all(f.files.map(sha256))));
      await bothRunOn('after the group checkpoint');
      for (const [i, f] of frozen.entries()) {
        assert.deepEqual(await Promise.all(f.files.map(sha256)), hashes[i], `${f.folder}: the frozen layers are unchanged`);
        assert.equal((await guestDiskOf(f.folder, f.id)).latest!.tick, f.tick);
        const now = await guestDiskOf(f.folder);
        assert.ok(now.latest!.tick > f.tick, `${f.folder}: the guest's writes go to Now's new children (${now.latest!.tick} after ${f.tick})`);
        assert.deepEqual((await groupsOf(f.folder)).filter((c) => c.group === r.group).map((c) => c.name), ['g1']);
      }
      for (const f of both) {
        assert.deepEqual(await journal(f), [], 'no record, no decision left');
        assert.deepEqual((await vmStatus(f)).warnings.filter((w) => /group/.test(w)), [], 'the coordinator closing its connection afterwards is no news');
      }
    });

    await t.test("a failure in one VM's phase: neither keeps the checkpoint, both run on", async () => {
      await assert.rejects(groupCheckpoint(both, { name: 'g2' }), /injected failure at live-group:member-paused/);
      for (const f of both) {
        assert.ok(!(await groupsOf(f)).some((c) => c.name === 'g2'), `${f} has no g2`);
        assert.deepEqual(await journal(f), []);
      }
      await bothRunOn('after the failed group checkpoint');
    });

    await t.test('the CLI: the pause of each guest and the longest, as text and as JSON', async () => {
      const json = await cli([...both, '--name', 'g-cli', '--type', 'production', '--json']);
      assert.equal(json.code, 0);
      const r = JSON.parse(json.stdout) as { group: string; pauseMs: number; checkpoints: Array<{ running: boolean; pauseMs: number; checkpoint: { type: string; group: string } }> };
      assert.deepEqual(r.checkpoints.map((c) => [c.running, c.checkpoint.type, c.checkpoint.group]), [[true, 'production', r.group], [true, 'production', r.group]]);
      assert.equal(r.pauseMs, Math.max(...r.checkpoints.map((c) => c.pauseMs)));
      const text = await cli([...both, '--name', 'g-text']);
      assert.equal(text.code, 0);
      assert.match(text.stdout, /vm-a: standard "g-text" .* the guest paused [\d.]+ ms/);
      assert.match(text.stdout, /the longest pause: [\d.]+ ms/);
      await bothRunOn('after the CLI');
    });

    for (const [at, kept] of [['live-group:paused', false], ['live-group:decided', true]] as const) {
      await t.test(`kill -9 of the coordinator at ${at}: ${kept ? 'both commit' : 'both roll back'}, both run on`, async () => {
        const name = `crash ${at}`;
        assert.equal((await cli([...both, '--name', name], at)).signal, 'SIGKILL');
        // Each worker sees its coordinator's connection close and settles by the decision file.
        for (const f of both) await pollUntil(async () => (await vmStatus(f)).busy, (busy) => busy === null, 60_000, `${f} settled`);
        const groups = await Promise.all(both.map(async (f) => (await groupsOf(f)).filter((c) => c.name === name)));
        assert.deepEqual(groups.map((g) => g.length), kept ? [1, 1] : [0, 0]);
        if (kept) assert.equal(groups[0]![0]!.group, groups[1]![0]!.group);
        for (const f of both) assert.deepEqual(await journal(f), [], `${f}: no record, no decision left`);
        await bothRunOn(`after the coordinator died at ${at}`);
      });
    }

    await t.test("vm-a's worker dies in its phase: vm-b rolls back and runs on, vm-a's next start rolls it back", async () => {
      assert.equal((await stopVm(a, { timeoutMs: 60_000 })).state, 'Off');
      await startVm(a, { env: { ...process.env, DISKCHAIN_TEST_CRASH_AT: 'live-group:member-paused' } });
      await pollUntil(() => lastTick(a), (n) => n >= 2, 90_000, 'vm-a ticks again');
      await assert.rejects(groupCheckpoint(both, { name: 'g-dead' }), /closed the connection|no worker answers/);
      await pollUntil(async () => (await vmStatus(a)).stale, (stale) => stale !== null, 30_000, 'vm-a reported stale');
      assert.ok(!(await groupsOf(b)).some((c) => c.name === 'g-dead'));
      assert.deepEqual(await journal(b), []);
      assert.equal((await vmStatus(b)).state, 'Running');
      await startVm(a);
      assert.ok(!(await groupsOf(a)).some((c) => c.name === 'g-dead'), "vm-a's interrupted member was rolled back");
      assert.deepEqual(await journal(a), [], 'no record, no decision left');
      await bothRunOn('after a worker died');
    });

    await t.test('both stopped: every folder checks clean', async () => {
      for (const f of both) {
        assert.equal((await stopVm(f, { timeoutMs: 60_000 })).state, 'Off');
        const report = await withVm(f, { lock: 'none', recover: false, command: 'test' }, (vm) => vm.check());
        assert.ok(report.clean, JSON.stringify(report.findings));
      }
    });
    t.diagnostic(`longest pause of the group checkpoint (ms): ${pauses.map((p) => p.toFixed(1)).join(', ')}`);
  } finally {
    for (const f of both) await killVm(f);
    await remove();
  }
});
