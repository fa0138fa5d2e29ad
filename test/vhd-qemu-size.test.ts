import assert from 'node:assert/strict';
import { openSync, readSync, closeSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { DiskType } from '../src/formats/types.js';
import { vhdDriver } from '../src/formats/vhd/driver.js';
import { chsSectors, geometryForSize, MAX_GEOMETRY, qemuDefaultSize } from '../src/formats/vhd/geometry.js';
import { FileSource } from '../src/io/file-source.js';
import { qemuImg, requireOracle } from './helpers/oracles.js';
import { realFixture, realFixtures } from './helpers/fixtures.js';
import { pseudoRandomBytes, withTempDir } from './helpers/vhd-util.js';

/**
 * VHDs diskchain makes read at their Current Size in qemu-img with no options (docs/formats/vhd.md,
 * "Which size readers see"): QEMU sizes a VHD from an unknown creator (ours is 'dchn') by its CHS
 * geometry unless that geometry is the maximum, so diskchain writes the spec geometry only when it
 * describes the size exactly, and the maximum otherwise.
 */

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
/** 4161 cylinders x 16 heads x 63 sectors: a size the spec's geometry describes exactly (2 GiB - 8 KiB). */
const CHS_EXACT = 4161 * 16 * 63 * 512;

const SIZES = [
  512, 3 * MiB + 7 * 512, 10 * MiB, 63 * MiB, 100 * MiB, 1 * GiB, CHS_EXACT, 2 * GiB, 2 * GiB + 512, 4 * GiB - 512,
  127 * GiB, 65278 * 16 * 255 * 512, 65535 * 16 * 255 * 512, 200 * GiB, 2040 * GiB,
];

function qemuInfo(args: string[]): { 'virtual-size': number; format: string } {
  return JSON.parse(qemuImg(['info', '--output=json', ...args])) as { 'virtual-size': number; format: string };
}

async function create(path: string, diskType: DiskType, size: number): Promise<void> {
  const disk = await vhdDriver.create(await FileSource.create(path), { diskType, virtualSize: size });
  await disk.close();
}

test('dynamic VHDs of many sizes: qemu-img info with no options reports the size asked for', async (t) => {
  if (!requireOracle(t, 'qemu-img')) return;
  const { dir, cleanup } = withTempDir();
  try {
    let exact = 0;
    for (const size of SIZES) {
      const path = join(dir, `d-${size}.vhd`);
      await create(path, 'dynamic', size);
      const info = qemuInfo([path]);
      assert.equal(info.format, 'vpc', `${size}: probed as vpc`);
      assert.equal(info['virtual-size'], size, `qemu-img sees ${info['virtual-size']} for a ${size}-byte VHD`);
      const src = await FileSource.open(path);
      const d = await vhdDriver.open(src);
      const g = d.details().geometry as { cylinders: number; heads: number; sectorsPerTrack: number };
      await d.close();
      const spec = geometryForSize(size);
      if (chsSectors(spec) * 512 === size) {
        exact++;
        assert.deepEqual(g, spec, `${size}: the spec geometry, which describes it exactly`);
      } else {
        assert.deepEqual(g, MAX_GEOMETRY, `${size}: the maximum geometry`);
      }
      const checked = await FileSource.open(path);
      const findings = await vhdDriver.check(checked);
      await checked.close();
      assert.deepEqual(findings.filter((f) => f.code.startsWith('VHD_GEOMETRY') || f.code === 'VHD_QEMU_CHS_SIZE'), [], `${size}`);
    }
    assert.ok(exact >= 2, 'both kinds of size were covered');
  } finally {
    cleanup();
  }
});

test('fixed VHDs: qemu-img info -f vpc (no size option) reports the size asked for', async (t) => {
  if (!requireOracle(t, 'qemu-img')) return;
  const { dir, cleanup } = withTempDir();
  try {
    for (const size of [512, 3 * MiB + 7 * 512, 10 * MiB, CHS_EXACT, 2 * GiB + 512]) {
      const path = join(dir, `f-${size}.vhd`);
      await create(path, 'fixed', size);
      // A fixed VHD has only a footer at the end: qemu probes it as raw, as it does Windows' own (see docs).
      assert.equal(qemuInfo(['-f', 'vpc', path])['virtual-size'], size, `${size}`);
    }
  } finally {
    cleanup();
  }
});

for (const diskType of ['dynamic', 'fixed'] as const) {
  test(`qemu-img convert of a ${diskType} 2 GiB VHD keeps the data in its last sectors`, async (t) => {
    if (!requireOracle(t, 'qemu-img')) return;
    const { dir, cleanup } = withTempDir();
    try {
      const size = 2 * GiB;
      const path = join(dir, 'tail.vhd');
      const disk = await vhdDriver.create(await FileSource.create(path), { diskType, virtualSize: size });
      const tail = pseudoRandomBytes(64 * KiB, 7);
      const head = pseudoRandomBytes(512, 8);
      await disk.write(head, 0);
      await disk.write(tail, size - tail.length);
      await disk.close();
      const raw = join(dir, 'tail.raw');
      qemuImg(['convert', ...(diskType === 'fixed' ? ['-f', 'vpc'] : []), '-O', 'raw', path, raw]);
      assert.equal(statSync(raw).size, size);
      const fd = openSync(raw, 'r');
      try {
        const got = new Uint8Array(tail.length);
        readSync(fd, got, 0, got.length, size - tail.length);
        assert.deepEqual(got, tail, 'the last 64 KiB survive the conversion');
        const first = new Uint8Array(512);
        readSync(fd, first, 0, 512, 0);
        assert.deepEqual(first, head);
      } finally {
        closeSync(fd);
      }
    } finally {
      cleanup();
    }
  });
}

test('qemuDefaultSize models what qemu-img (no size option) reads of the real VHDs: Windows, Virtual PC and qemu creators', async (t) => {
  if (!requireOracle(t, 'qemu-img')) return;
  let differs = 0;
  for (const e of realFixtures().filter((f) => f.expected.format === 'VHD')) {
    const path = realFixture(e.name);
    const d = await vhdDriver.open(await FileSource.open(path));
    const details = d.details() as { creatorApplication: string; geometry: { cylinders: number; heads: number; sectorsPerTrack: number } };
    await d.close();
    const modelled = qemuDefaultSize(details.creatorApplication, details.geometry, e.expected.virtualSize);
    assert.equal(modelled, qemuInfo(['-f', 'vpc', path])['virtual-size'], `${e.name} (creator '${details.creatorApplication}')`);
    if (modelled !== e.expected.virtualSize) differs++;
  }
  assert.ok(differs >= 1, 'a fixture QEMU sizes by CHS is among them (virtualpc-dynamic.vhd)');
});
