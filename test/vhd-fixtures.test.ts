import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { vhdDriver } from '../src/formats/vhd/driver.js';
import { FileSource } from '../src/io/file-source.js';
import { realFixture, realFixtures } from './helpers/fixtures.js';
import { diskSha256 } from './helpers/vhd-util.js';

const vhds = realFixtures().filter((e) => e.expected.format === 'VHD');
const HUGE = 1024 ** 3;

function fileSha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

test('the manifest lists VHD fixtures', () => {
  assert.ok(vhds.length >= 6, `found ${vhds.length}`);
});

for (const { name, sha256, expected: entry } of vhds) {
  test(`fixture ${name}: probes, opens and reads as the manifest says`, async () => {
    const path = realFixture(name);
    const before = fileSha(path);
    assert.equal(before, sha256);
    const src = await FileSource.open(path);
    try {
      assert.equal(await vhdDriver.probe(src), true);
      const disk = await vhdDriver.open(src);
      assert.equal(disk.format, 'vhd');
      assert.equal(disk.diskType, entry.diskType);
      assert.equal(disk.virtualSize, entry.virtualSize);
      assert.equal(disk.readOnly, true);
      if (entry.blockSize !== null) assert.equal(disk.blockSize, entry.blockSize);
      const id = disk.identity();
      assert.equal(id.format, 'vhd');
      assert.equal(id.format === 'vhd' && id.uniqueId, entry.vhd!.uniqueId);
      const details = disk.details();
      assert.deepEqual(details.geometry, entry.vhd!.geometry);
      const findings = await vhdDriver.check(src);
      assert.deepEqual(findings.filter((f) => f.severity === 'error'), [], JSON.stringify(findings));

      if (entry.virtualSize > HUGE) {
        // 127 GiB empty disks: no block allocated, reads are zeros.
        assert.equal(details.allocatedBlocks, 0);
        assert.equal(await disk.allocatedBytes(), 0);
        const map = await disk.map(0, disk.virtualSize);
        assert.deepEqual(map, [{ offset: 0, length: disk.virtualSize, state: 'transparent' }]);
        const buf = new Uint8Array(1 << 20);
        for (const at of [0, 2 ** 30, 64 * 2 ** 30 + 512, disk.virtualSize - buf.length]) {
          buf.fill(0xaa);
          await disk.read(buf, at);
          assert.ok(buf.every((b) => b === 0), `zeros at ${at}`);
        }
      } else if (entry.diskType === 'differencing') {
        const p = entry.parent!;
        assert.ok(disk.parent);
        assert.deepEqual(disk.parent.expected, { format: 'vhd', uniqueId: p.parentUniqueId, timestamp: 0 });
        assert.deepEqual(disk.parent.locators, [
          { kind: 'absolute', key: 'W2ku', path: 'C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd' },
          { kind: 'relative', key: 'W2ru', path: '.\\fat-parent.vhd' },
        ]);
        assert.equal(details.parentUnicodeName, p.parentUnicodeName);
        // 18 sectors in block 0 are present: runs 134, 143, 152-159, 184-185, 188, 190-192, 194, 196.
        const map = await disk.map(0, disk.virtualSize);
        const data = map.filter((e) => e.state === 'data');
        const sectors = data.flatMap((e) => Array.from({ length: e.length / 512 }, (_, i) => e.offset / 512 + i));
        assert.deepEqual(sectors, [134, 143, 152, 153, 154, 155, 156, 157, 158, 159, 184, 185, 188, 190, 191, 192, 194, 196]);
        assert.equal(data.length, 8);
        // Over an all-zero parent the chain reads as this layer's own bytes.
        assert.equal(await diskSha256(disk), entry.contentSha256OverZeroParent);
      } else {
        assert.equal(await diskSha256(disk), entry.contentSha256);
        if (entry.dataExtents && entry.diskType === 'dynamic') {
          const map = await disk.map(0, disk.virtualSize);
          assert.deepEqual(map.filter((e) => e.state === 'data').map((e) => [e.offset, e.length]), entry.dataExtents);
        }
      }
      await disk.close();
    } finally {
      await src.close();
    }
    assert.equal(fileSha(path), before, 'file unchanged');
  });
}
