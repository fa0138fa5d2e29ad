import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { DiskType, VirtualDisk } from '../src/formats/types.js';
import { vhdDriver } from '../src/formats/vhd/driver.js';
import { FileSource } from '../src/io/file-source.js';
import { pyvhdiSha256, qemuImg, requireOracle } from './helpers/oracles.js';
import { diskSha256, pseudoRandomBytes, sha256, withTempDir } from './helpers/vhd-util.js';

const MiB = 1024 * 1024;

/** Applies `count` deterministic random sector-aligned writes to disk and model. */
async function randomWrites(disk: VirtualDisk, model: Uint8Array, count: number, seed: number, maxLen: number): Promise<void> {
  const rnd = pseudoRandomBytes(count * 8, seed);
  const sectors = model.length / 512;
  for (let i = 0; i < count; i++) {
    const a = (rnd[i * 8]! | (rnd[i * 8 + 1]! << 8) | (rnd[i * 8 + 2]! << 16)) >>> 0;
    const b = (rnd[i * 8 + 3]! | (rnd[i * 8 + 4]! << 8) | (rnd[i * 8 + 5]! << 16)) >>> 0;
    const start = a % sectors;
    const len = Math.min(1 + (b % Math.max(1, maxLen / 512)), sectors - start);
    const data = pseudoRandomBytes(len * 512, seed * 1000 + i + 1);
    await disk.write(data, start * 512);
    model.set(data, start * 512);
  }
}

/** qemu-img's read of a VHD; `sizeBy` 'default' gives it no size option (what a user would type). */
function qemuRawSha(path: string, dir: string, sizeBy: 'default' | 'current_size' = 'current_size'): { sha: string; size: number } {
  const out = join(dir, `out-${Math.random().toString(36).slice(2)}.raw`);
  const source = sizeBy === 'default' ? ['-f', 'vpc', path] : ['--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${path}`];
  qemuImg(['convert', ...source, '-O', 'raw', out]);
  const bytes = readFileSync(out);
  return { sha: sha256(bytes), size: bytes.length };
}

const ourCases: Array<{ type: DiskType; size: number; blockSize?: number }> = [
  { type: 'dynamic', size: 5 * MiB + 3 * 512 },
  { type: 'dynamic', size: 700 * 1024, blockSize: 512 * 1024 },
  { type: 'dynamic', size: 4 * MiB },
  { type: 'fixed', size: 3 * MiB + 512 },
  { type: 'fixed', size: 10 * MiB - 512 },
];

for (const c of ourCases) {
  test(`qemu-img reads a ${c.type} VHD of ${c.size} bytes we created and wrote`, async (t) => {
    if (!requireOracle(t, 'qemu-img')) return;
    const { dir, cleanup } = withTempDir();
    try {
      const path = join(dir, 'ours.vhd');
      const model = new Uint8Array(c.size);
      const disk = await vhdDriver.create(await FileSource.create(path), { diskType: c.type, virtualSize: c.size, ...(c.blockSize ? { blockSize: c.blockSize } : {}) });
      await randomWrites(disk, model, 40, c.size % 997, 3 * MiB);
      await disk.close();
      // No size option: diskchain's geometry makes qemu use Current Size (docs/formats/vhd.md).
      const info = JSON.parse(qemuImg(['info', '--output=json', '-f', 'vpc', path])) as { 'virtual-size': number };
      assert.equal(info['virtual-size'], c.size);
      const q = qemuRawSha(path, dir, 'default');
      assert.equal(q.size, c.size);
      assert.equal(q.sha, sha256(model));
      // Reopen through our own driver: same bytes, no check errors.
      const src = await FileSource.open(path);
      const again = await vhdDriver.open(src);
      assert.equal(await diskSha256(again), sha256(model));
      assert.deepEqual((await vhdDriver.check(src)).filter((f) => f.severity !== 'info'), []);
      await again.close();
    } finally {
      cleanup();
    }
  });
}

for (const subformat of ['dynamic', 'fixed'] as const) {
  for (const rawSize of [3 * MiB + 7 * 512, 6 * MiB]) {
    test(`a ${subformat} VHD made by qemu-img (${rawSize} bytes) reads the same through our driver, and takes our writes`, async (t) => {
      if (!requireOracle(t, 'qemu-img')) return;
      const { dir, cleanup } = withTempDir();
      try {
        const raw = pseudoRandomBytes(rawSize, rawSize);
        raw.fill(0, 2 * MiB, Math.min(rawSize, 4 * MiB)); // an all-zero block qemu leaves unallocated
        const rawPath = join(dir, 'in.raw');
        writeFileSync(rawPath, raw);
        const path = join(dir, 'qemu.vhd');
        qemuImg(['convert', '-f', 'raw', '-O', 'vpc', '-o', `subformat=${subformat}`, rawPath, path]);
        const src = await FileSource.open(path);
        const disk = await vhdDriver.open(src);
        assert.equal(disk.diskType, subformat);
        assert.ok(disk.virtualSize >= rawSize);
        const model = new Uint8Array(disk.virtualSize);
        model.set(raw);
        assert.equal(await diskSha256(disk), sha256(model));
        assert.equal(qemuRawSha(path, dir).sha, sha256(model));
        assert.deepEqual((await vhdDriver.check(src)).filter((f) => f.severity === 'error'), []);
        if (subformat === 'dynamic') {
          const map = await disk.map(0, disk.virtualSize);
          assert.ok(map.some((e) => e.state === 'transparent'), 'qemu left the zero block unallocated');
        }
        await disk.close();

        // Our writes into qemu's file, read back by qemu.
        const w = await vhdDriver.open(await FileSource.open(path, { writable: true }), { writable: true });
        await randomWrites(w, model, 25, 7 + rawSize, MiB);
        await w.close();
        assert.equal(qemuRawSha(path, dir).sha, sha256(model));
      } finally {
        cleanup();
      }
    });
  }
}

test('pyvhdi reads dynamic and fixed VHDs we created the same as our model', async (t) => {
  if (!requireOracle(t, 'pyvhdi')) return;
  const { dir, cleanup } = withTempDir();
  try {
    for (const type of ['dynamic', 'fixed'] as const) {
      const path = join(dir, `${type}.vhd`);
      const size = 5 * MiB + 1024;
      const model = new Uint8Array(size);
      const disk = await vhdDriver.create(await FileSource.create(path), { diskType: type, virtualSize: size });
      await randomWrites(disk, model, 30, 99, MiB);
      await disk.close();
      assert.equal(pyvhdiSha256(path), sha256(model));
    }
  } finally {
    cleanup();
  }
});
