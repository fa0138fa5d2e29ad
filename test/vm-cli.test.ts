/**
 * The VM commands as scripts use them: the JSON names the issue fixes (vm show: disks[{id, path}];
 * checkpoint list: checkpoints[{id, name, parent, created, type}], now{parent}; checkpoint create:
 * the new checkpoints with ids), names that repeat (AMBIGUOUS with the candidates, exit 6), a busy VM
 * (VM_BUSY, exit 4), vm rm without --yes, vm check on leftovers, and a full disk refused before
 * anything changes.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createVm, openVm } from '../src/api/vm.js';
import { isDiskchainError } from '../src/io/errors.js';
import { CLI as MAIN } from './helpers/cli.js';

const MIB = 1024 * 1024;

function dc(args: string[]): { status: number | null; stdout: string; stderr: string; json: any } { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  let json: unknown;
  try {
    json = JSON.parse(r.stdout);
  } catch {
    json = undefined;
  }
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, json };
}

test('vm and checkpoint commands: JSON for scripts, ambiguity, busy, rm, check', { timeout: 300_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-cli-'));
  try {
    const folder = join(work, 'vm');
    assert.equal(dc(['vm', 'create', folder, '--new-disk', '4M', '--new-disk', '2M', '--name', 'cli', '--memory', '512M', '--cpus', '2']).status, 0);
    const show = dc(['vm', 'show', folder, '--json']).json;
    assert.deepEqual(show.disks.map((d: { id: string }) => d.id), ['disk0', 'disk1']);
    assert.ok(existsSync(show.disks[0].path), 'disks[].path is the file Now writes');
    assert.equal(show.config.memoryBytes, 512 * 1024 * 1024);

    const first = dc(['checkpoint', 'create', folder, '--name', 'same', '--json']).json;
    assert.equal(first.checkpoints.length, 1);
    assert.match(first.checkpoints[0].id, /^[0-9a-f-]{36}$/);
    const second = dc(['checkpoint', 'create', folder, '--name', 'same', '--json']).json;
    const list = dc(['checkpoint', 'list', folder, '--json']).json;
    assert.deepEqual(
      list.checkpoints.map((c: Record<string, unknown>) => [c.id, c.name, c.parent, typeof c.created, c.type]),
      [
        [first.checkpoints[0].id, 'same', null, 'string', 'production'],
        [second.checkpoints[0].id, 'same', first.checkpoints[0].id, 'string', 'production'],
      ],
    );
    assert.equal(list.now.parent, second.checkpoints[0].id);
    // Now's file changed: the one vm show names is the new leaf.
    assert.notEqual(dc(['vm', 'show', folder, '--json']).json.disks[0].path, show.disks[0].path);

    const ambiguous = dc(['checkpoint', 'apply', folder, 'same', '--json']);
    assert.equal(ambiguous.status, 6);
    assert.equal(ambiguous.json.error.code, 'AMBIGUOUS');
    assert.deepEqual(ambiguous.json.error.candidates.map((c: { id: string }) => c.id).sort(), [first.checkpoints[0].id, second.checkpoints[0].id].sort());
    const missing = dc(['checkpoint', 'remove', folder, 'nothing-like-this']);
    assert.equal(missing.status, 6);
    assert.match(missing.stderr, /CHECKPOINT_NOT_FOUND/);
    assert.equal(dc(['checkpoint', 'rename', folder, first.checkpoints[0].id, '']).status, 2, 'an empty name is refused');
    assert.equal(dc(['checkpoint', 'rename', folder, first.checkpoints[0].id, 'x'.repeat(101)]).status, 2, '101 characters are refused');
    assert.equal(dc(['checkpoint', 'rename', folder, first.checkpoints[0].id.slice(0, 8), 'first']).status, 0, 'an id prefix names a checkpoint');

    // Busy: another process holds the VM.
    const holder = await openVm(folder);
    try {
      const busy = dc(['checkpoint', 'create', folder, '--json']);
      assert.equal(busy.status, 4);
      assert.equal(busy.json.error.code, 'VM_BUSY');
      assert.equal(busy.json.error.holder.pid, process.pid);
    } finally {
      await holder.close();
    }

    // Leftovers: a temporary file of ours is deleted by --repair; a stray layer is reported, never deleted.
    writeFileSync(join(folder, 'Virtual Hard Disks', 'x.avhdx.diskchain-partial'), 'partial');
    const strayLayer = join(folder, 'Virtual Hard Disks', 'stray.avhdx');
    writeFileSync(strayLayer, readFileSync(join(folder, list.checkpoints[0].disks[0].file)));
    const check = dc(['vm', 'check', folder, '--json']);
    assert.equal(check.status, 1);
    assert.deepEqual(check.json.findings.map((f: { code: string }) => f.code).sort(), ['LEFTOVER', 'STRAY_LAYER']);
    const repair = dc(['vm', 'check', folder, '--repair', '--json']);
    assert.deepEqual(repair.json.findings.map((f: { code: string }) => f.code), ['STRAY_LAYER']);
    assert.ok(existsSync(strayLayer), 'a stray layer is never deleted');
    rmSync(strayLayer);

    // vm rm: refused without --yes; with it, only the VM's files go.
    assert.equal(dc(['vm', 'rm', folder]).status, 2);
    writeFileSync(join(folder, 'notes.txt'), 'mine');
    const rm = dc(['vm', 'rm', folder, '--yes', '--json']).json;
    assert.deepEqual(readdirSync(folder), ['notes.txt']);
    assert.equal(rm.left.length, 1);
    assert.equal(dc(['vm', 'show', folder]).status, 6, 'no VM any more');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('a full file system: checkpoint create and a removal that must merge are refused before anything changes', { timeout: 300_000 }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-space-'));
  const small = join(work, 'small');
  mkdirSync(small);
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${96 * MIB}`, 'tmpfs', small]);
  if (r.status !== 0) {
    console.error(`SKIPPED LOUDLY: cannot mount a small tmpfs (${r.stderr.toString().trim()}); the space test needs root`);
    t.skip('needs root');
    rmSync(work, { recursive: true, force: true });
    return;
  }
  try {
    const folder = join(small, 'vm');
    await createVm(folder, { newDisks: [{ size: 64 * MIB }] });
    const vm = await openVm(folder);
    try {
      const write = async (seed: number, offset: number): Promise<void> => {
        const chain = await vm.openDisk('disk0', { writable: true });
        await chain.write(new Uint8Array(16 * MIB).fill(seed), offset);
        await chain.close();
      };
      await write(1, 0);
      await vm.checkpoint({ name: 'A' });
      await write(2, 32 * MIB);
      await vm.checkpoint({ name: 'B' });
      // Leave 3 MiB: less than a new layer's metadata, and far less than A's merge.
      const free = statfsSync(small).bavail * statfsSync(small).bsize;
      assert.equal(spawnSync('fallocate', ['-l', String(free - 3 * MIB), join(small, 'filler')]).status, 0);
      const before = JSON.stringify(readdirSync(join(folder, 'Virtual Hard Disks')).sort()) + readFileSync(join(folder, 'vm.json'), 'utf8');
      for (const attempt of [() => vm.checkpoint({ name: 'C' }), () => vm.remove('A')]) {
        await assert.rejects(attempt(), (e: unknown) => {
          assert.ok(isDiskchainError(e), String(e));
          assert.equal(e.code, 'NO_SPACE', e.message);
          return true;
        });
        const after = JSON.stringify(readdirSync(join(folder, 'Virtual Hard Disks')).sort()) + readFileSync(join(folder, 'vm.json'), 'utf8');
        assert.equal(after, before, 'nothing changed');
        assert.deepEqual(readdirSync(join(folder, 'journal')), []);
      }
    } finally {
      await vm.close();
    }
  } finally {
    spawnSync('umount', [small]);
    rmSync(work, { recursive: true, force: true });
  }
});
