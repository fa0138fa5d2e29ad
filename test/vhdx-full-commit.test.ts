/**
 * A file system that fills up between a write and the flush that commits its metadata: the commit's
 * in-place page write is refused (ENOSPC, nothing written). The disk must not be poisoned by that:
 * once space is freed, the same handle flushes and writes again (what Paused-Critical's resume
 * needs), and every write reads back, through us and through qemu-img / pyvhdi.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createChild, createDisk } from '../src/api/create.js';
import { openDisk } from '../src/chain/open-chain.js';
import { isDiskchainError } from '../src/io/errors.js';
import { fillUp, mountTmpfs } from './helpers/tmpfs.js';
import { qemuImg, requireOracle } from './helpers/oracles.js';
import { MIB, randomBytesFrom, tempDir } from './helpers/vhdx-util.js';

const GIB = 1024 * MIB;

test('ENOSPC in a metadata commit (a fresh BAT page, a fresh sector bitmap): retried after space is freed, nothing lost, the disk not poisoned', async (t) => {
  const { dir, cleanup } = tempDir();
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  const mounted = mountTmpfs(mnt, '16m');
  if (!mounted.ok) {
    cleanup();
    if (process.env.CI === 'true') throw new Error(mounted.error);
    console.error(`SKIPPED LOUDLY: ${mounted.error}`);
    t.skip(mounted.error);
    return;
  }
  try {
    // A dynamic disk written far out (its BAT entry on a page never written: a hole on tmpfs) and a
    // differencing child (its first write allocates a sector bitmap block: a hole too).
    const base = join(mnt, 'base.vhdx');
    await (await createDisk(base, 'vhdx', { diskType: 'dynamic', virtualSize: 64 * GIB })).close();
    const child = join(mnt, 'child.avhdx');
    await (await createChild(child, base)).close();
    const far = 40 * GIB;
    const first = randomBytesFrom(1, 64 * 1024);
    const second = randomBytesFrom(2, 64 * 1024);
    for (const [path, at] of [[base, far], [child, 512]] as const) {
      const disk = await openDisk(path, { writable: true });
      const filler = join(mnt, 'filler');
      try {
        await disk.write(first, at);
        await fillUp(filler);
        await assert.rejects(disk.flush(), (e: unknown) => isDiskchainError(e) && e.code === 'NO_SPACE', `${path}: the commit is refused for space`);
        await rm(filler);
        await disk.flush();
        await disk.write(second, at + first.length);
        await disk.flush();
      } finally {
        await disk.close();
        await rm(filler, { force: true });
      }
      const again = await openDisk(path);
      try {
        const got = new Uint8Array(first.length * 2);
        await again.read(got, at);
        assert.deepEqual(got.subarray(0, first.length), first, `${path}: the write before the full file system`);
        assert.deepEqual(got.subarray(first.length), second, `${path}: the write after space was freed`);
      } finally {
        await again.close();
      }
    }
    if (requireOracle(t, 'qemu-img')) {
      assert.match(qemuImg(['check', '-f', 'vhdx', base]), /No errors were found/);
      const raw = join(dir, 'far.raw');
      qemuImg(['dd', '-f', 'vhdx', '-O', 'raw', `if=${base}`, `of=${raw}`, 'bs=64k', `skip=${far / (64 * 1024)}`, `count=${far / (64 * 1024) + 2}`]);
      const { readFileSync } = await import('node:fs');
      const bytes = new Uint8Array(readFileSync(raw));
      assert.deepEqual(bytes.subarray(0, first.length), first, 'qemu-img reads the first write');
      assert.deepEqual(bytes.subarray(first.length), second, 'and the second');
    }
  } finally {
    mounted.unmount();
    cleanup();
  }
});
