/**
 * The field walkthrough at VM level, on a real file system (mkfs.fat + mtools):
 *
 *   a FAT disk with ORIGINAL.TXT becomes a VM (vm create --disk --copy); checkpoints c1, c2, c3 are
 *   taken between CHECK01.TXT, CHECK02.TXT and NOW.TXT (written as a guest would: only the sectors
 *   mcopy changed); c1 is applied with --checkpoint-first ("before"), a branch gets BRANCH.TXT and its
 *   own checkpoint; then the middle checkpoints are removed, in order and out of order (c2: merged
 *   with its only child; c1: kept as an unnamed layer while two branches depend on it; "branch":
 *   merged with Now; c3: merged with "before"; then the unnamed c1 layer, down to one child).
 *
 * After every step each checkpoint and Now shows exactly its files with their contents (mtools on
 * the disk read through its chain), and the last export is read by qemu-img.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { openVm } from '../src/api/vm.js';
import { changedRuns, fatGet, fatList, fatPut, makeFat } from './helpers/fat.js';
import { qemuImg, requireOracle } from './helpers/oracles.js';
import { readWhole } from './helpers/vm-model.js';
import { CLI as MAIN } from './helpers/cli.js';

const MIB = 1024 * 1024;

function dc(args: string[]): string {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, `diskchain ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

const CONTENT: Record<string, string> = {
  'ORIGINAL.TXT': 'the original file, on the base disk\r\n'.repeat(3000),
  'CHECK01.TXT': 'added after checkpoint 1\r\n'.repeat(200),
  'CHECK02.TXT': 'added after checkpoint 2, large enough to span blocks\r\n'.repeat(60000),
  'NOW.TXT': 'the current state\r\n',
  'BRANCH.TXT': 'written on the branch after applying c1\r\n'.repeat(500),
};

test('walkthrough at VM level: FAT disk, checkpoints, apply, branch, removals in and out of order', { timeout: 300_000 }, async (t) => {
  if (!requireOracle(t, 'mkfs.fat') || !requireOracle(t, 'mtools') || !requireOracle(t, 'qemu-img')) return;
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-walk-'));
  try {
    const raw = join(work, 'fat.raw');
    makeFat(raw, 32 * MIB);
    fatPut(raw, 'ORIGINAL.TXT', CONTENT['ORIGINAL.TXT']!);
    dc(['convert', raw, join(work, 'system.vhdx'), '-f', 'raw']);
    const folder = join(work, 'vm');
    dc(['vm', 'create', folder, '--disk', join(work, 'system.vhdx'), '--copy', '--name', 'walk']);

    /** The guest writes a file: read Now, mcopy into a copy, write back only the changed sectors. */
    const guestWrite = async (name: string): Promise<void> => {
      const vm = await openVm(folder);
      try {
        const before = join(work, 'before.raw');
        const after = join(work, 'after.raw');
        writeFileSync(before, await readWhole(vm, 'disk0'));
        copyFileSync(before, after);
        fatPut(after, name, CONTENT[name]!);
        const chain = await vm.openDisk('disk0', { writable: true });
        const image = readFileSync(after);
        for (const run of changedRuns(before, after)) await chain.write(image.subarray(run.offset, run.offset + run.length), run.offset);
        await chain.close();
      } finally {
        await vm.close();
      }
    };
    const expectFiles = async (expected: Record<string, string[]>, step: string): Promise<void> => {
      const vm = await openVm(folder, { lock: 'read' });
      try {
        const names = Object.fromEntries(vm.manifest.checkpoints.map((c) => [c.name, c.id]));
        assert.deepEqual(Object.keys(names).sort(), Object.keys(expected).filter((k) => k !== 'Now').sort(), `${step}: the checkpoints`);
        for (const [who, files] of Object.entries(expected)) {
          const image = join(work, 'look.raw');
          writeFileSync(image, await readWhole(vm, 'disk0', who === 'Now' ? undefined : names[who]));
          assert.deepEqual(fatList(image).sort(), [...files].sort(), `${step}: ${who} shows the wrong files`);
          for (const f of files) assert.equal(fatGet(image, f).toString('utf8'), CONTENT[f], `${step}: ${who}'s ${f}`);
        }
      } finally {
        await vm.close();
      }
    };

    const O = 'ORIGINAL.TXT';
    const C1 = 'CHECK01.TXT';
    const C2 = 'CHECK02.TXT';
    const N = 'NOW.TXT';
    const B = 'BRANCH.TXT';
    dc(['checkpoint', 'create', folder, '--name', 'c1']);
    await guestWrite(C1);
    dc(['checkpoint', 'create', folder, '--name', 'c2']);
    await guestWrite(C2);
    dc(['checkpoint', 'create', folder, '--name', 'c3']);
    await guestWrite(N);
    await expectFiles({ c1: [O], c2: [O, C1], c3: [O, C1, C2], Now: [O, C1, C2, N] }, 'three checkpoints');

    dc(['checkpoint', 'apply', folder, 'c1', '--checkpoint-first', 'before']);
    await expectFiles({ c1: [O], c2: [O, C1], c3: [O, C1, C2], before: [O, C1, C2, N], Now: [O] }, 'c1 applied, Now saved as "before"');
    await guestWrite(B);
    dc(['checkpoint', 'create', folder, '--name', 'branch']);
    await expectFiles({ c1: [O], c2: [O, C1], c3: [O, C1, C2], before: [O, C1, C2, N], branch: [O, B], Now: [O, B] }, 'a branch');

    const removed = JSON.parse(dc(['checkpoint', 'remove', folder, 'c2', '--json'])) as { merged: unknown[] };
    assert.equal(removed.merged.length, 1, 'c2 had one child: its layer is merged');
    await expectFiles({ c1: [O], c3: [O, C1, C2], before: [O, C1, C2, N], branch: [O, B], Now: [O, B] }, 'c2 removed (in the middle)');

    const kept = JSON.parse(dc(['checkpoint', 'remove', folder, 'c1', '--json'])) as { kept: string[]; merged: unknown[] };
    assert.equal(kept.kept.length, 1, "c1's layer has two branches below it: it stays as an unnamed layer");
    assert.equal(kept.merged.length, 0);
    await expectFiles({ c3: [O, C1, C2], before: [O, C1, C2, N], branch: [O, B], Now: [O, B] }, 'c1 removed (two children)');

    dc(['checkpoint', 'remove', folder, 'branch']);
    await expectFiles({ c3: [O, C1, C2], before: [O, C1, C2, N], Now: [O, B] }, 'branch removed (merged with Now)');
    dc(['checkpoint', 'remove', folder, 'c3']);
    await expectFiles({ before: [O, C1, C2, N], Now: [O, B] }, 'c3 removed out of order');

    const list = JSON.parse(dc(['checkpoint', 'list', folder, '--json'])) as { checkpoints: Array<{ id: string; name: string; parent: string | null }>; now: { parent: string | null }; unnamed: unknown[] };
    assert.deepEqual(list.checkpoints.map((c) => [c.name, c.parent]), [['before', null]]);
    assert.equal(list.now.parent, null, 'Now derives from no checkpoint any more');
    assert.equal(list.unnamed.length, 1, 'the old base stays unnamed: two branches (before and Now) depend on it');
    const check = JSON.parse(dc(['vm', 'check', folder, '--json'])) as { clean: boolean };
    assert.ok(check.clean);

    // The exported checkpoint, read by qemu-img: the same files.
    const exported = join(work, 'exported');
    const result = JSON.parse(dc(['checkpoint', 'export', folder, 'before', exported, '-O', 'vhdx', '--json'])) as { disks: Array<{ path: string }> };
    const flat = join(work, 'qemu.raw');
    qemuImg(['convert', '-f', 'vhdx', '-O', 'raw', result.disks[0]!.path, flat]);
    assert.deepEqual(fatList(flat).sort(), [O, C1, C2, N].sort());
    for (const f of [O, C1, C2, N]) assert.equal(fatGet(flat, f).toString('utf8'), CONTENT[f]);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
