/**
 * Interop with independent readers and writers: qemu-img reads what we write (check, convert, info),
 * we read what qemu-img writes, and libvhdi (pyvhdi) reads our differencing chains.
 */
import { closeSync, openSync, readFileSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { FileSource } from '../src/io/file-source.js';
import { vhdxDriver } from '../src/formats/vhdx/driver.js';
import type { DiskType, VirtualDisk } from '../src/formats/types.js';
import { pyvhdiSha256, qemuImg, requireOracle } from './helpers/oracles.js';
import { assertBytesEqual, assertMapContract, chainSha256, describeFindings, MIB, randomBytesFrom, readAll, Rng, sha256, tempDir } from './helpers/vhdx-util.js';

let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir('diskchain-vhdx-interop-'));
});
after(() => cleanup?.());

let fileNo = 0;
const fresh = (ext: string): string => join(dir, `f${++fileNo}.${ext}`);

async function assertCheckClean(path: string, what: string): Promise<void> {
  const src = await FileSource.open(path);
  const findings = await vhdxDriver.check(src);
  await src.close();
  assert.deepEqual(findings.filter((f) => f.severity !== 'info'), [], `${what}: check() findings:\n${describeFindings(findings)}`);
}

function qemuCheck(path: string, what: string): void {
  try {
    qemuImg(['check', '-f', 'vhdx', path]);
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    assert.fail(`${what}: qemu-img check failed:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
  }
}

function qemuRaw(path: string): Uint8Array {
  const raw = fresh('raw');
  qemuImg(['convert', '-f', 'vhdx', '-O', 'raw', path, raw]);
  return new Uint8Array(readFileSync(raw));
}

/** Random sector-aligned writes (some block-spanning, some zero, always the first and last sector) into disk and model. */
async function scribble(disk: VirtualDisk, model: Uint8Array, seed: number, count: number): Promise<void> {
  const rng = new Rng(seed);
  const lss = disk.logicalSectorSize;
  const sectors = disk.virtualSize / lss;
  const put = async (first: number, n: number, zero: boolean): Promise<void> => {
    n = Math.max(1, Math.min(n, sectors - first));
    const data = zero ? new Uint8Array(n * lss) : randomBytesFrom(rng.u32(), n * lss);
    await disk.write(data, first * lss);
    model.set(data, first * lss);
  };
  await put(sectors - 1, 1, false);
  await put(0, 1 + rng.int(8), false);
  for (let i = 0; i < count; i++) {
    const shape = rng.int(6);
    if (shape === 0) {
      // Straddle a block boundary.
      const boundary = Math.floor(rng.int(Math.ceil(disk.virtualSize / disk.blockSize)) * (disk.blockSize / lss));
      const first = Math.max(0, Math.min(sectors - 1, boundary - 1 - rng.int(32)));
      await put(first, 2 + rng.int(128), false);
    } else if (shape === 1) {
      await put(rng.int(sectors), 1 + rng.int((2 * MIB) / lss), rng.bool(0.3));
    } else {
      await put(rng.int(sectors), 1 + rng.int(64), rng.bool(0.15));
    }
  }
}

// --- (a) qemu-img reads what we write ---

interface Shape {
  diskType: DiskType;
  blockSize: number;
  virtualSize: number;
  logicalSectorSize: number;
}
const SIZES: [number, number][] = [
  [10 * MIB + 512, 512],
  [33 * MIB + 4096 * 3, 512],
  [33 * MIB + 4096 * 3, 4096],
];
const SHAPES: Shape[] = [];
for (const diskType of ['fixed', 'dynamic'] as DiskType[]) {
  for (const blockSize of [MIB, 8 * MIB, 32 * MIB]) {
    for (const [virtualSize, logicalSectorSize] of SIZES) SHAPES.push({ diskType, blockSize, virtualSize, logicalSectorSize });
  }
}
SHAPES.push({ diskType: 'dynamic', blockSize: 256 * MIB, virtualSize: 33 * MIB + 4096 * 3, logicalSectorSize: 4096 });

for (const [i, s] of SHAPES.entries()) {
  // qemu's vhdx driver refuses logical sectors other than 512 (ENOTSUP): libvhdi is the oracle there.
  const oracle = s.logicalSectorSize === 512 ? 'qemu-img' : 'pyvhdi';
  test(`${oracle} reads our ${s.diskType} VHDX: ${s.blockSize / MIB} MiB blocks, ${s.virtualSize} bytes, ${s.logicalSectorSize}-byte sectors`, async (t) => {
    if (!requireOracle(t, oracle)) return;
    const path = fresh('vhdx');
    const model = new Uint8Array(s.virtualSize);
    const disk = await vhdxDriver.create(await FileSource.create(path), { diskType: s.diskType, virtualSize: s.virtualSize, blockSize: s.blockSize, logicalSectorSize: s.logicalSectorSize });
    await scribble(disk, model, 100 + i, 14);
    await disk.close();
    // A second session (a writable reopen) as well: header updates and a second log commit.
    const again = await vhdxDriver.open(await FileSource.open(path, { writable: true }), { writable: true });
    await scribble(again, model, 200 + i, 6);
    await again.close();

    await assertCheckClean(path, 'ours');
    if (oracle === 'qemu-img') {
      qemuCheck(path, 'ours');
      const info = JSON.parse(qemuImg(['info', '-f', 'vhdx', '--output=json', path])) as { 'virtual-size': number; format: string };
      assert.equal(info.format, 'vhdx');
      assert.equal(info['virtual-size'], s.virtualSize, 'qemu-img info virtual-size');
      assertBytesEqual(qemuRaw(path), model, 'qemu-img convert -O raw');
    } else {
      assert.equal(pyvhdiSha256(path), sha256(model), 'pyvhdi reads different bytes (or a different size)');
    }
    // And we agree with ourselves on a read-only reopen.
    const ro = await vhdxDriver.open(await FileSource.open(path));
    assertBytesEqual(await readAll(ro), model, 'our read-only reopen');
    await ro.close();
  });
}

// --- (b) we read what qemu-img writes ---

/** A raw image with random runs, explicit zero runs and real holes (never written). */
function makeRaw(path: string, size: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  const model = new Uint8Array(size);
  const fd = openSync(path, 'w');
  try {
    for (let i = 0; i < 24; i++) {
      const at = rng.int(size / 512) * 512;
      const n = Math.min(size - at, (1 + rng.int(rng.bool(0.3) ? 4096 : 64)) * 512);
      const data = rng.bool(0.2) ? new Uint8Array(n) : randomBytesFrom(rng.u32(), n);
      writeSync(fd, data, 0, n, at);
      model.set(data, at);
    }
    const last = randomBytesFrom(rng.u32(), 512);
    writeSync(fd, last, 0, 512, size - 512);
    model.set(last, size - 512);
  } finally {
    closeSync(fd);
  }
  assert.equal(statSync(path).size, size);
  return model;
}

const QEMU_MADE: string[] = [
  'subformat=dynamic,block_size=1M',
  'subformat=dynamic,block_size=8M',
  'subformat=dynamic,block_size=32M',
  'subformat=dynamic,block_size=2M,block_state_zero=off',
  'subformat=dynamic,block_size=1M,log_size=4M',
  'subformat=fixed',
  'subformat=fixed,block_size=4M',
];

for (const [i, opts] of QEMU_MADE.entries()) {
  test(`we read a qemu-img-made VHDX (${opts}) byte for byte, and qemu reads our writes into it`, async (t) => {
    if (!requireOracle(t, 'qemu-img')) return;
    const raw = fresh('raw');
    const size = 21 * MIB + 512 * 5;
    const model = makeRaw(raw, size, 300 + i);
    const path = fresh('vhdx');
    qemuImg(['convert', '-f', 'raw', '-O', 'vhdx', '-o', opts, raw, path]);
    await assertCheckClean(path, 'qemu-made');
    const disk = await vhdxDriver.open(await FileSource.open(path));
    assert.equal(disk.virtualSize, size);
    assert.equal(disk.diskType, opts.includes('fixed') ? 'fixed' : 'dynamic');
    assertMapContract(await disk.map(0, size), 0, size, 'map of qemu-made file');
    assertBytesEqual(await readAll(disk), model, 'our read of the qemu-made file');
    await disk.close();

    // Now we write into qemu's file; qemu must accept the result and see our bytes.
    const rw = await vhdxDriver.open(await FileSource.open(path, { writable: true }), { writable: true });
    await scribble(rw, model, 400 + i, 10);
    await rw.close();
    await assertCheckClean(path, 'qemu-made, written by us');
    qemuCheck(path, 'qemu-made, written by us');
    assertBytesEqual(qemuRaw(path), model, 'qemu-img convert after our writes');
  });
}

// --- (c) libvhdi reads our differencing chains ---

for (const depth of [2, 5]) {
  for (const logicalSectorSize of [512, 4096]) {
    test(`pyvhdi reads our differencing chain ${depth} deep with ${logicalSectorSize}-byte sectors`, async (t) => {
      if (!requireOracle(t, 'pyvhdi')) return;
      const rng = new Rng(depth * 10000 + logicalSectorSize);
      const virtualSize = 18 * MIB + logicalSectorSize * 3;
      const paths: string[] = [];
      const model = new Uint8Array(virtualSize);
      // Base: dynamic. Each later layer: a child of the one below, written after its parent was sealed.
      let spec: { identity: ReturnType<VirtualDisk['identity']>; path: string } | undefined;
      for (let layer = 0; layer < depth; layer++) {
        const path = fresh(layer === 0 ? 'vhdx' : 'avhdx');
        const blockSize = [MIB, 2 * MIB, 4 * MIB][rng.int(3)]!;
        const disk = spec
          ? await vhdxDriver.create(await FileSource.create(path), {
              diskType: 'differencing',
              virtualSize,
              blockSize,
              parent: { identity: spec.identity, virtualSize, logicalSectorSize, physicalSectorSize: 4096, relativePath: `.\\${spec.path.split('/').pop()!}`, absolutePath: spec.path },
            })
          : await vhdxDriver.create(await FileSource.create(path), { diskType: 'dynamic', virtualSize, blockSize, logicalSectorSize });
        await scribble(disk, model, rng.u32(), 10);
        const identity = disk.identity();
        await disk.close();
        await assertCheckClean(path, `layer ${layer}`);
        spec = { identity, path };
        paths.unshift(path);
      }
      // Our composed read of the whole chain, per map() extent.
      const layers: VirtualDisk[] = [];
      for (const p of paths) layers.push(await vhdxDriver.open(await FileSource.open(p)));
      try {
        for (let i = 0; i + 1 < layers.length; i++) assert.deepEqual(layers[i]!.parent?.expected, layers[i + 1]!.identity(), `layer ${i} does not name layer ${i + 1}`);
        const ours = await chainSha256(layers);
        assert.equal(ours, sha256(model), 'our composed chain read differs from the model');
        const theirs = pyvhdiSha256(paths[0]!, paths.slice(1));
        assert.equal(theirs, ours, 'pyvhdi reads the chain differently');
      } finally {
        for (const l of layers) await l.close();
      }
    });
  }
}
