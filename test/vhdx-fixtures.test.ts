import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FileSource } from '../src/io/file-source.js';
import { vhdxDriver } from '../src/formats/vhdx/driver.js';
import type { VirtualDisk } from '../src/formats/types.js';
import { realFixture, realFixtures } from './helpers/fixtures.js';

async function contentSha256(disk: VirtualDisk): Promise<string> {
  const h = createHash('sha256');
  const chunk = new Uint8Array(8 * 1024 * 1024);
  for (let off = 0; off < disk.virtualSize; off += chunk.length) {
    const part = chunk.subarray(0, Math.min(chunk.length, disk.virtualSize - off));
    await disk.read(part, off);
    h.update(part);
  }
  return h.digest('hex');
}

function fileSha256(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

for (const { name, sha256, expected: m } of realFixtures().filter((e) => e.expected.format === 'VHDX')) {
  test(`real fixture ${name} reads to its manifest sha256 and stays unchanged`, async () => {
    const path = realFixture(name);
    assert.equal(fileSha256(path), sha256, 'fixture file is not the one in the manifest');
    const source = await FileSource.open(path);
    assert.equal(await vhdxDriver.probe(source), true);
    const disk = await vhdxDriver.open(source);
    try {
      assert.equal(disk.virtualSize, m.virtualSize);
      assert.equal(disk.blockSize, m.blockSize);
      assert.equal(disk.logicalSectorSize, m.logicalSectorSize);
      assert.equal(disk.physicalSectorSize, m.physicalSectorSize);
      assert.equal(await contentSha256(disk), m.contentSha256);
    } finally {
      await disk.close();
    }
    assert.equal(fileSha256(path), sha256, 'a read-only open changed the file');
  });
}
