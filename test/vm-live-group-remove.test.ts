/**
 * Removing a group checkpoint when one of its VMs runs (runtime/live-group-remove.ts), on real QEMU
 * (TCG) with the test guest, through the CLI. vm-a runs, its counter ticking on disk0; it has a
 * third disk (disk2) the guest never touches, written through the worker's NBD socket between the
 * checkpoints. vm-b and vm-c stay off (the engine's part), written between the checkpoints too.
 *  - g1, g2 and g3, group checkpoints of vm-a and vm-b, more writes after each;
 *  - g3's removal (the library) cancelled once decided, vm-a's worker held after its first merged piece
 *    (DISKCHAIN_TEST_HOLD_AT): ABORTED, g3 gone from both, the layers left to merge later, every view
 *    unchanged, progress reported as the members' sum;
 *  - `checkpoint remove
 *    --group g2 vm-a vm-b`: neither manifest holds g2, every disk's flat views (Now, g1) hash as
 *    before (vm-a's disk0 at Now: the guest's records go on), nothing left in either journal;
 *  - refusals change no file: an off member without the group (vm-c), a running member without it
 *    (a group of vm-b and vm-c removed from vm-a and vm-b);
 *  - the coordinating CLI killed -9 before the decision (nothing changes), and once the decision is
 *    durable: vm-a's worker removes its member on its own, vm-b's record is finished by `vm check
 *    --repair`; the views as before, no record, no decision left;
 *  - both running (vm-a and vm-d, the decision in vm-d's journal): both merge live, both guests write on;
 *  - the counter went on through all of it (one boot); stopped, every folder checks clean.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { createVm, groupCheckpoint, groupRemove, withVm } from '../src/api/vm.js';
import { isDiskchainError } from '../src/io/errors.js';
import { callControl } from '../src/runtime/control.js';
import { liveWorker } from '../src/runtime/status.js';
import { startVm, stopVm, vmStatus } from '../src/api/vm-runtime.js';
import { EXIT } from '../src/cli/output.js';
import { CLI } from './helpers/cli.js';
import { pollUntil, requireGuest, tempFolder, type GuestImage } from './helpers/guest.js';
import { NbdClient } from './helpers/nbd-client.js';
import { guestDiskOf, killVm, serialOf } from './helpers/vm-runtime.js';

const MIB = 1 << 20;
const DISKS = [1 * MIB, 16 * MIB, 8 * MIB];

async function makeVm(dir: string, image: GuestImage, name: string): Promise<string> {
  const folder = join(dir, name);
  await createVm(folder, {
    newDisks: DISKS.map((size) => ({ size })),
    memoryBytes: 256 * MIB,
    checkpointType: 'production',
    settings: { boot: { kind: 'kernel', kernel: image.kernel, initrd: image.initrd, append: 'console=ttyS0 panic=-1' } },
  });
  return folder;
}

/** A disk's flat view (Now's or a checkpoint's), hashed; read shared, as qemu-img -U would. */
async function viewHash(folder: string, disk: string, checkpoint?: string): Promise<string> {
  return withVm(folder, { lock: 'none', recover: false, command: 'test' }, async (vm) => {
    const chain = await vm.openDisk(disk, { forceShare: true, ...(checkpoint ? { checkpoint } : {}) });
    try {
      const h = createHash('sha256');
      const buf = new Uint8Array(MIB);
      for (let at = 0; at < chain.virtualSize; at += buf.length) {
        await chain.read(buf, at);
        h.update(buf);
      }
      return h.digest('hex');
    } finally {
      await chain.close();
    }
  });
}

/** Every flat view of the VM (each disk at Now and at each checkpoint), but `skip` (views the guest writes). */
async function views(folder: string, skip: string[] = []): Promise<Record<string, string>> {
  const refs = await withVm(folder, { lock: 'none', recover: false, command: 'test' }, async (vm) => vm.manifest.checkpoints.map((c) => c.name));
  const out: Record<string, string> = {};
  for (const ref of ['Now', ...refs]) {
    for (const disk of ['disk0', 'disk1', 'disk2']) if (!skip.includes(`${ref}/${disk}`)) out[`${ref}/${disk}`] = await viewHash(folder, disk, ref === 'Now' ? undefined : ref);
  }
  return out;
}

/** The views but a removed checkpoint's. */
const without = (v: Record<string, string>, name: string): Record<string, string> => Object.fromEntries(Object.entries(v).filter(([k]) => !k.startsWith(`${name}/`)));

/** Every file of a folder (but run/, the worker's), hashed: a refusal changes none. */
async function files(folder: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(folder, { recursive: true, withFileTypes: true })) {
    const path = join(e.parentPath, e.name);
    const rel = relative(folder, path);
    if (!e.isFile() || rel.startsWith('run/') || rel.endsWith('.lock')) continue;
    out[rel] = createHash('sha256').update(await readFile(path)).digest('hex');
  }
  return out;
}

/** Writes into an off VM's Now. */
async function writeOff(folder: string, disk: string, offset: number, length: number): Promise<void> {
  await withVm(folder, { command: 'test' }, async (vm) => {
    const chain = await vm.openDisk(disk, { writable: true });
    try {
      await chain.write(randomBytes(length), offset);
      await chain.flush();
    } finally {
      await chain.close();
    }
  });
}

/** Writes into a running VM's disk2 through its worker's NBD socket (the guest never touches disk2). */
async function writeServed(folder: string, offset: number, length: number): Promise<void> {
  const client = await NbdClient.connect(join(folder, 'run', 'nbd.sock'), { exportName: 'disk2' });
  try {
    await client.write(offset, randomBytes(length), 1 /* FUA */);
  } finally {
    await client.disconnect();
  }
}

function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

const lastTick = async (folder: string): Promise<number> => (await serialOf(folder).ticks()).at(-1) ?? 0;
const journal = (folder: string): Promise<string[]> => readdir(join(folder, 'journal')).catch(() => []);
const groupsOf = (folder: string): Promise<Array<{ name: string; group: string | null }>> => withVm(folder, { lock: 'none', recover: false, command: 'test' }, async (vm) => vm.manifest.checkpoints.map((c) => ({ name: c.name, group: c.group })));
/** Layers no checkpoint and not Now names (left to merge later). */
const unnamed = (folder: string): Promise<number> =>
  withVm(folder, { lock: 'none', recover: false, command: 'test' }, async (vm) => {
    const named = new Set([...vm.manifest.checkpoints.flatMap((c) => Object.values(c.disks)), ...Object.values(vm.manifest.now.disks)]);
    return vm.manifest.nodes.filter((n) => !named.has(n.id)).length;
  });
const groupId = async (folder: string, name: string): Promise<string> => (await groupsOf(folder)).find((c) => c.name === name)!.group!;

test('remove a group checkpoint of running and off VMs: all or none, across a crash', { timeout: 300_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder('dc-lgroup-rm-');
  const a = await makeVm(dir, image, 'vm-a');
  const b = await makeVm(dir, image, 'vm-b');
  const c = await makeVm(dir, image, 'vm-c');
  const d = await makeVm(dir, image, 'vm-d');
  const hold = join(dir, 'hold');
  try {
    for (const f of [a, b]) await writeOff(f, 'disk2', 0, 4 * MIB);
    await writeOff(b, 'disk1', 0, 8 * MIB);
    // vm-a's worker waits after the first piece it merges (the cancel below lands there).
    await Promise.all([startVm(a, { env: { ...process.env, DISKCHAIN_TEST_HOLD_AT: 'live-remove:piece', DISKCHAIN_TEST_HOLD_FILE: hold } }), startVm(d)]);
    for (const f of [a, d]) {
      await serialOf(f).waitFor(/diskchain-guest: ready boots=1 .* agent=yes/, 120_000);
      await pollUntil(() => lastTick(f), (n) => n >= 2, 60_000, 'ticks');
    }
    const ticksOn = async (what: string, f = a): Promise<void> => {
      const before = await lastTick(f);
      assert.equal((await vmStatus(f)).state, 'Running', what);
      await pollUntil(() => lastTick(f), (n) => n >= before + 2, 60_000, `${f} ticks ${what}`);
      assert.equal((await serialOf(f).text()).match(/diskchain-guest: ready/g)?.length, 1, `${f}: one boot (${what})`);
    };
    // g1 and g2 (and g3, later), each followed by writes in every VM.
    const checkpointAndWrite = async (name: string, at: number): Promise<string> => {
      const r = await groupCheckpoint([a, b], { name });
      await writeServed(a, at, 2 * MIB);
      await writeOff(b, 'disk2', at + MIB, 2 * MIB);
      await writeOff(b, 'disk1', at, 3 * MIB);
      await writeOff(b, 'disk0', 0, 64 * 1024);
      return r.group;
    };
    await checkpointAndWrite('g1', 2 * MIB);
    const g2 = await checkpointAndWrite('g2', 5 * MIB);
    const g3 = await checkpointAndWrite('g3', 3 * MIB);
    await pollUntil(() => guestDiskOf(a), (v) => (v.latest?.tick ?? 0) > 0, 30_000, 'records at Now');

    await t.test('a cancel once decided: every member loses g3, the merges stop, every view unchanged; progress is the members\' sum', async () => {
      const beforeA = without(await views(a, ['Now/disk0', 'Now/disk1']), 'g3');
      const beforeB = without(await views(b), 'g3');
      const abort = new AbortController();
      const progress: Array<[number, number]> = [];
      const removal = groupRemove([a, b], g3, { signal: abort.signal, onProgress: (done, total) => progress.push([done, total]) });
      removal.catch(() => undefined);
      await pollUntil(async () => existsSync(hold), (held) => held, 60_000, "vm-a's worker holding after its first piece");
      await pollUntil(async () => progress.length, (n) => n > 0, 30_000, 'progress reported');
      abort.abort();
      // The cancel reached the worker before it goes on.
      await pollUntil(async () => ((await callControl((await liveWorker(a))!.control, 'remove-progress')) as { cancelling: boolean } | null)?.cancelling, (c) => c === true, 30_000, 'the cancel at the worker');
      await rm(hold);
      await assert.rejects(removal, (e: unknown) => isDiskchainError(e) && e.code === 'ABORTED' && /removed from every VM/.test(e.message));
      assert.ok(progress.every(([done, total]) => total > 0 && done <= total), JSON.stringify(progress));
      for (const f of [a, b]) assert.deepEqual((await groupsOf(f)).map((c) => c.name), ['g1', 'g2'], `${f}: g3 gone`);
      assert.deepEqual(await journal(a), [], "vm-a: no record, no decision left (the worker settled its merge)");
      assert.ok((await unnamed(a)) > 0, "vm-a: g3's layers wait unnamed for a later merge");
      // vm-b: a merge the engine had begun keeps its record and resumes with the next command, as a single removal's.
      for (const name of await journal(b)) assert.equal((JSON.parse(await readFile(join(b, 'journal', name), 'utf8')) as { operation: string }).operation, 'collapse', name);
      assert.deepEqual(await views(a, ['Now/disk0', 'Now/disk1']), beforeA);
      assert.deepEqual(await views(b), beforeB);
      await ticksOn('after the cancel');
    });

    await t.test('checkpoint remove --group g2 vm-a vm-b: both removed, every view unchanged, the guest writes on', async () => {
      // vm-a's disk0 at Now takes the guest's counter; its disk1 is the guest's mounted ext2.
      const beforeA = await views(a, ['Now/disk0', 'Now/disk1']);
      const beforeB = await views(b);
      const tickBefore = (await guestDiskOf(a)).latest!.tick;
      const r = await cli(['checkpoint', 'remove', '--group', g2, a, b, '--json']);
      assert.equal(r.code, EXIT.ok, r.stderr);
      const out = JSON.parse(r.stdout) as { group: string; vms: Array<{ running: boolean; result: { removed: Array<{ name: string }>; merged: unknown[] } }> };
      assert.deepEqual(out.vms.map((v) => [v.running, v.result.removed.map((c) => c.name)]), [[true, ['g2']], [false, ['g2']]]);
      assert.ok(out.vms.every((v) => v.result.merged.length > 0), 'each VM merged its layers');
      assert.equal(await unnamed(a), 0, "vm-a's worker also merged what the cancel left");
      for (const f of [a, b]) {
        assert.deepEqual((await groupsOf(f)).map((c) => c.name), ['g1'], `${f} holds g1 only`);
        assert.deepEqual(await journal(f), [], `${f}: no record, no decision left`);
      }
      assert.deepEqual(await views(a, ['Now/disk0', 'Now/disk1']), without(beforeA, 'g2'));
      assert.deepEqual(await views(b), without(beforeB, 'g2'));
      await ticksOn('after the removal');
      assert.ok((await guestDiskOf(a)).latest!.tick > tickBefore, 'the guest wrote on into Now');
    });

    await t.test('refusals change no file: an off VM without the group, a running one without it', async () => {
      const g1 = await groupId(a, 'g1');
      const gbc = (await groupCheckpoint([b, c], { name: 'g-bc' })).group;
      const before = { a: await files(a), b: await files(b), c: await files(c), views: await views(a, ['Now/disk0', 'Now/disk1']) };
      const offLacks = await cli(['checkpoint', 'remove', '--group', g1, a, c]);
      assert.equal(offLacks.code, EXIT.notFound, offLacks.stderr);
      assert.match(offLacks.stderr, /vm-c has no checkpoint of group .*nothing was removed/);
      const runningLacks = await cli(['checkpoint', 'remove', '--group', gbc, b, a]);
      assert.equal(runningLacks.code, EXIT.notFound, runningLacks.stderr);
      assert.match(runningLacks.stderr, /vm-a has no checkpoint of group .*nothing was removed/);
      // vm-a's disk0 and disk1 files at Now are the guest's; every other file is unchanged.
      const nowFiles = await withVm(a, { lock: 'none', recover: false, command: 'test' }, async (vm) => ['disk0', 'disk1'].map((d) => vm.manifest.nodes.find((n) => n.id === vm.manifest.now.disks[d])!.file));
      const stable = (m: Record<string, string>): Record<string, string> => Object.fromEntries(Object.entries(m).filter(([k]) => !nowFiles.includes(k)));
      assert.deepEqual(stable(await files(a)), stable(before.a));
      assert.deepEqual(await files(b), before.b);
      assert.deepEqual(await files(c), before.c);
      assert.deepEqual(await views(a, ['Now/disk0', 'Now/disk1']), before.views);
      assert.equal((await vmStatus(a)).busy, null);
    });

    await t.test('the coordinator killed -9 before the decision: nothing changes', async () => {
      const g1 = await groupId(a, 'g1');
      const before = { a: await views(a, ['Now/disk0', 'Now/disk1']), b: await files(b) };
      const r = await cli(['checkpoint', 'remove', '--group', g1, a, b], { DISKCHAIN_TEST_CRASH_AT: 'live-group-remove:prepared' });
      assert.equal(r.signal, 'SIGKILL');
      await pollUntil(async () => (await vmStatus(a)).busy, (busy) => busy === null, 60_000, 'vm-a settled');
      await pollUntil(() => journal(a), (j) => j.length === 0, 30_000, "vm-a's record and decision gone");
      assert.deepEqual(await files(b), before.b, 'vm-b untouched');
      for (const f of [a, b]) assert.ok((await groupsOf(f)).some((c) => c.name === 'g1'), `${f} keeps g1`);
      assert.deepEqual(await views(a, ['Now/disk0', 'Now/disk1']), before.a);
      await ticksOn('after a crash before the decision');
    });

    await t.test('the coordinator killed -9 once the decision is durable: the worker removes on its own, vm check --repair finishes vm-b', async () => {
      const g1 = await groupId(a, 'g1');
      const beforeA = without(await views(a, ['Now/disk0', 'Now/disk1']), 'g1');
      const beforeB = without(await views(b), 'g1');
      const r = await cli(['checkpoint', 'remove', '--group', g1, a, b], { DISKCHAIN_TEST_CRASH_AT: 'live-group-remove:decided' });
      assert.equal(r.signal, 'SIGKILL');
      // vm-a's worker sees its coordinator's connection close, finds the decision and removes g1.
      await pollUntil(async () => (await groupsOf(a)).some((c) => c.name === 'g1'), (has) => !has, 60_000, 'g1 gone from vm-a');
      await pollUntil(async () => (await vmStatus(a)).busy, (busy) => busy === null, 120_000, "vm-a's merges over");
      const pending = await cli(['vm', 'check', b, '--json']);
      assert.equal(pending.code, EXIT.findings, pending.stdout);
      const repaired = await cli(['vm', 'check', b, '--repair']);
      assert.equal(repaired.code, EXIT.ok, repaired.stdout + repaired.stderr);
      assert.match(repaired.stdout, /repaired: remove .* finished/);
      for (const f of [a, b]) {
        assert.ok(!(await groupsOf(f)).some((c) => c.name === 'g1'), `${f} without g1`);
        assert.deepEqual(await journal(f), [], `${f}: no record, no decision left`);
      }
      assert.deepEqual(await views(a, ['Now/disk0', 'Now/disk1']), beforeA);
      assert.deepEqual(await views(b), beforeB);
      await ticksOn('after a crash after the decision');
      assert.equal((await vmStatus(a)).warnings.filter((w) => /decided to remove: removing here/.test(w)).length, 1, 'the worker says it removed on its own');
    });

    await t.test('both running: vm-d and vm-a merge live, both guests write on', async () => {
      // vm-d first: the decision lives in a running VM's journal.
      const g = (await groupCheckpoint([d, a], { name: 'g-da' })).group;
      await writeServed(a, 6 * MIB, MIB);
      await writeServed(d, MIB, 2 * MIB);
      const before = { a: without(await views(a, ['Now/disk0', 'Now/disk1']), 'g-da'), d: without(await views(d, ['Now/disk0', 'Now/disk1']), 'g-da') };
      const r = await cli(['checkpoint', 'remove', '--group', g, d, a, '--json']);
      assert.equal(r.code, EXIT.ok, r.stderr);
      const out = JSON.parse(r.stdout) as { vms: Array<{ running: boolean; result: { removed: Array<{ name: string }>; merged: unknown[] } }> };
      assert.deepEqual(out.vms.map((v) => [v.running, v.result.removed.map((c) => c.name), v.result.merged.length > 0]), [[true, ['g-da'], true], [true, ['g-da'], true]]);
      for (const f of [a, d]) {
        assert.ok(!(await groupsOf(f)).some((c) => c.group === g), `${f} without g-da`);
        assert.deepEqual(await journal(f), [], `${f}: no record, no decision left`);
        await ticksOn('after removing a group of two running VMs', f);
      }
      assert.deepEqual(await views(a, ['Now/disk0', 'Now/disk1']), before.a);
      assert.deepEqual(await views(d, ['Now/disk0', 'Now/disk1']), before.d);
    });

    await t.test('stopped: every folder checks clean', async () => {
      for (const f of [a, d]) assert.equal((await stopVm(f, { timeoutMs: 60_000 })).state, 'Off');
      for (const f of [a, b, c, d]) {
        const r = await cli(['vm', 'check', f]);
        assert.equal(r.code, EXIT.ok, r.stdout);
      }
    });
  } finally {
    await rm(hold, { force: true });
    for (const f of [a, d]) await killVm(f);
    await remove();
  }
});
