import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import type { VirtualDisk } from '../src/formats/types.js';
import { vhdDriver } from '../src/formats/vhd/driver.js';
import { FileSource } from '../src/io/file-source.js';
import { pyvhdiSha256, requireOracle } from './helpers/oracles.js';
import { chainSha256, pseudoRandomBytes, sha256, withTempDir } from './helpers/vhd-util.js';

const MiB = 1024 * 1024;

/**
 * Random writes in units of `unit` sectors. libvhdi 20210425 misreads a differencing bitmap byte
 * whose set bits are followed by clear ones (it shifts without masking, so the trailing clear bits
 * count as present and read this layer's zeros instead of the parent): pyvhdi comparisons therefore
 * use 8-sector (4 KiB) units, whole bitmap bytes; sector-granular chains are checked against the model.
 */
async function scatter(disk: VirtualDisk, model: Uint8Array, count: number, seed: number, unit: number): Promise<void> {
  const r = pseudoRandomBytes(count * 4, seed);
  for (let i = 0; i < count; i++) {
    const sectors = model.length / 512;
    const start = Math.floor((((r[i * 4]! << 8) | r[i * 4 + 1]!) * 37 % sectors) / unit) * unit;
    const len = Math.min((1 + (((r[i * 4 + 2]! << 8) | r[i * 4 + 3]!) % 3000)) * unit, sectors - start);
    const data = pseudoRandomBytes(len * 512, seed * 977 + i);
    await disk.write(data, start * 512);
    model.set(data, start * 512);
  }
}

for (const [depth, unit] of [[2, 8], [5, 8], [2, 1], [5, 1]] as const) {
  const withPyvhdi = unit === 8;
  test(`a differencing VHD chain ${depth} deep written by us (${unit * 512}-byte write units) reads as the model${withPyvhdi ? ', and the same through pyvhdi' : ''}`, async (t) => {
    if (withPyvhdi && !requireOracle(t, 'pyvhdi')) return;
    const { dir, cleanup } = withTempDir();
    try {
      const size = 9 * MiB + 512 * 5;
      const model = new Uint8Array(size);
      const paths: string[] = [];
      let parent: VirtualDisk | undefined;
      let parentPath = '';
      for (let level = 0; level < depth; level++) {
        const path = join(dir, `layer${level}.vhd`);
        const disk: VirtualDisk = await vhdDriver.create(await FileSource.create(path), {
          diskType: level === 0 ? 'dynamic' : 'differencing',
          virtualSize: size,
          ...(parent
            ? {
                parent: {
                  identity: parent.identity(),
                  virtualSize: parent.virtualSize,
                  logicalSectorSize: 512,
                  physicalSectorSize: 512,
                  relativePath: `.\\layer${level - 1}.vhd`,
                  absolutePath: parentPath,
                },
              }
            : {}),
        });
        if (parent) {
          assert.deepEqual(disk.parent?.expected, parent.identity());
          assert.deepEqual(disk.parent?.locators.map((l) => [l.kind, l.key, l.path]), [
            ['relative', 'W2ru', `.\\layer${level - 1}.vhd`],
          ]);
          await parent.close();
        }
        await scatter(disk, model, 12, level + 1 + depth * 10, unit);
        parent = disk;
        parentPath = path;
        paths.unshift(path);
      }
      await parent!.close();

      const layers: VirtualDisk[] = [];
      for (const p of paths) layers.push(await vhdDriver.open(await FileSource.open(p)));
      const ours = await chainSha256(layers);
      for (const l of layers) await l.close();
      assert.equal(ours, sha256(model));
      if (withPyvhdi) assert.equal(pyvhdiSha256(paths[0]!, paths.slice(1)), sha256(model));
    } finally {
      cleanup();
    }
  });
}
