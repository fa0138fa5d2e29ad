import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { bitmapByteLength, bitRuns, setBits } from '../src/formats/vhd/sector-bitmap.js';
import { vhdChecksum } from '../src/formats/vhd/checksum.js';
import { decodeDynamicHeader, encodeDynamicHeader } from '../src/formats/vhd/dynamic-header.js';
import { decodeFooter, encodeFooter } from '../src/formats/vhd/footer.js';
import { chsSectors, geometryForSize } from '../src/formats/vhd/geometry.js';
import { locatorSpaceBytes } from '../src/formats/vhd/parent-locator.js';
import { uniqueIdToBytes, uniqueIdToString } from '../src/formats/vhd/unique-id.js';
import { vhdDriver } from '../src/formats/vhd/driver.js';
import { isDiskchainError } from '../src/io/errors.js';
import { MemorySource } from '../src/io/memory-source.js';
import { realFixture } from './helpers/fixtures.js';
import { sampleImage } from './helpers/vhd-images.js';

test('CHS geometry follows the spec algorithm (values Windows and qemu wrote in the fixtures)', () => {
  const cases: Array<[number, [number, number, number]]> = [
    [3 * 1024 * 1024, [90, 4, 17]],
    [10 * 1024 * 1024, [301, 4, 17]],
    [4194304, [120, 4, 17]],
    [4212736, [121, 4, 17]],
    [136365211648, [65278, 16, 255]],
  ];
  for (const [size, [c, h, s]] of cases) assert.deepEqual(geometryForSize(size), { cylinders: c, heads: h, sectorsPerTrack: s }, `size ${size}`);
  // Never more than 65535 cylinders; capped at 65535*16*255 sectors.
  const g = geometryForSize(2040 * 1024 ** 3);
  assert.ok(g.cylinders <= 65535 && chsSectors(g) <= 65535 * 16 * 255);
});

test('footer decode/encode round-trips a Windows footer byte for byte, checksum included', () => {
  const file = readFileSync(realFixture('win10-fixed-3M.vhd'));
  const raw = new Uint8Array(file.subarray(file.length - 512));
  const f = decodeFooter(raw);
  assert.equal(f.cookie, 'conectix');
  assert.equal(f.creatorApplication, 'win ');
  assert.equal(f.uniqueId, '7ed7879a-4fbd-9a41-b16d-9503f2fb35c7');
  assert.equal(f.checksum, vhdChecksum(raw, 64));
  assert.deepEqual(encodeFooter(f), raw);
});

test('dynamic header decode/encode round-trips the Windows differencing header', () => {
  const file = readFileSync(realFixture('fat-differential.vhd'));
  const raw = new Uint8Array(file.subarray(512, 1536));
  const h = decodeDynamicHeader(raw);
  assert.equal(h.parentUnicodeName, 'C:\\Projects\\dfvfs\\test_data\\fat-parent.vhd');
  assert.equal(h.parentUniqueId, '5fa21a55-f394-aa4d-9958-1951a67d5540');
  const again = encodeDynamicHeader({
    tableOffset: Number(h.tableOffset), maxTableEntries: h.maxTableEntries, blockSize: h.blockSize,
    parentUniqueId: h.parentUniqueId, parentTimeStamp: h.parentTimeStamp, parentUnicodeName: h.parentUnicodeName, parentLocators: h.parentLocators,
  });
  assert.deepEqual(again, raw);
});

test('parent locator data space: Windows byte counts and spec sector counts', () => {
  const e = (space: number, length: number) => ({ platformCode: 'W2ku', platformDataSpace: space, platformDataLength: length, platformDataOffset: 0n });
  assert.equal(locatorSpaceBytes(e(0x1000, 84)), 4096); // Windows: bytes
  assert.equal(locatorSpaceBytes(e(0x10000, 32)), 65536);
  assert.equal(locatorSpaceBytes(e(1, 84)), 512); // spec: sectors
  assert.equal(locatorSpaceBytes(e(2, 600)), 1024);
});

test('sector bitmap: MSB-first bits, runs, padding to a sector', () => {
  assert.equal(bitmapByteLength(2 * 1024 * 1024), 512);
  assert.equal(bitmapByteLength(4096), 512);
  assert.equal(bitmapByteLength(256 * 1024 * 1024), 512 * 128);
  const bm = new Uint8Array(512);
  setBits(bm, 1, 2);
  setBits(bm, 8, 9);
  assert.equal(bm[0], 0b0110_0000);
  assert.equal(bm[1], 0xff);
  assert.equal(bm[2], 0b1000_0000);
  assert.deepEqual(bitRuns(bm, 0, 24), [[0, 1, false], [1, 2, true], [3, 5, false], [8, 9, true], [17, 7, false]]);
});

test('unique ids print in stored byte order', () => {
  const text = 'f84f1636-cd9e-9041-a69e-dcc2380e416a';
  assert.deepEqual(Array.from(uniqueIdToBytes(text).subarray(0, 4)), [0xf8, 0x4f, 0x16, 0x36]);
  assert.equal(uniqueIdToString(uniqueIdToBytes(text)), text);
});

test('probe: by content only', async () => {
  assert.equal(await vhdDriver.probe(new MemorySource(await sampleImage('fixed'))), true);
  assert.equal(await vhdDriver.probe(new MemorySource(await sampleImage('dynamic'))), true);
  assert.equal(await vhdDriver.probe(new MemorySource(new Uint8Array(1 << 16))), false);
  assert.equal(await vhdDriver.probe(new MemorySource(new Uint8Array(10))), false);
  const vhdx = new Uint8Array(1 << 16);
  vhdx.set(Buffer.from('vhdxfile'));
  assert.equal(await vhdDriver.probe(new MemorySource(vhdx)), false);
  // A dynamic disk whose end footer is gone still probes by its copy at offset 0.
  assert.equal(await vhdDriver.probe(new MemorySource((await sampleImage('dynamic')).slice(0, -512))), true);
});

test('a pre-2004 fixed disk with a 511-byte footer probes and opens', async () => {
  const img = await sampleImage('fixed');
  const old = img.slice(0, -1); // the 512th footer byte is reserved (zero): drop it
  const src = new MemorySource(old, { readOnly: true });
  assert.equal(await vhdDriver.probe(src), true);
  const disk = await vhdDriver.open(src);
  assert.equal(disk.virtualSize, img.length - 512);
  const a = new Uint8Array(4096);
  await disk.read(a, 0);
  assert.deepEqual(a, img.subarray(0, 4096));
  assert.ok((await vhdDriver.check(src)).some((f) => f.code === 'VHD_FOOTER_511'));
});

test('create: layouts and footer fields', async () => {
  const fixed = new MemorySource();
  const f = await vhdDriver.create(fixed, { diskType: 'fixed', virtualSize: 3 * 1024 * 1024 + 512 });
  assert.equal(await fixed.size(), 3 * 1024 * 1024 + 1024);
  assert.equal(f.details().creatorApplication, 'dchn');
  assert.equal(f.details().creatorHostOs, 'Wi2k');
  const dyn = new MemorySource();
  const d = await vhdDriver.create(dyn, { diskType: 'dynamic', virtualSize: 10 * 1024 * 1024 });
  assert.equal(d.blockSize, 2 * 1024 * 1024);
  // 10 MiB is not a whole number of the spec's cylinders (301/4/17 is 12 sectors short): the maximum
  // geometry, so that QEMU reads Current Size; a size the spec describes exactly keeps the spec's.
  assert.deepEqual(d.details().geometry, { cylinders: 65535, heads: 16, sectorsPerTrack: 255 });
  const exact = await vhdDriver.create(new MemorySource(), { diskType: 'dynamic', virtualSize: 301 * 4 * 17 * 512 });
  assert.deepEqual(exact.details().geometry, { cylinders: 301, heads: 4, sectorsPerTrack: 17 });
  assert.equal(await dyn.size(), 512 + 1024 + 512 + 512);
  // A new block of a dynamic disk gets an all-ones bitmap; the footer moves to the new end.
  await d.write(new Uint8Array(512).fill(1), 2 * 1024 * 1024);
  const snap = dyn.snapshot();
  assert.equal(snap.length, 2048 + 512 + 2 * 1024 * 1024 + 512);
  assert.ok(snap.subarray(2048, 2560).every((b) => b === 0xff));
  assert.deepEqual(snap.subarray(snap.length - 512), snap.subarray(0, 512));
});

test('create: refuses impossible requests with INVALID_ARGUMENT / UNSUPPORTED', async () => {
  const parent = { identity: { format: 'vhd' as const, uniqueId: '11111111-2222-4333-8444-555555555555', timestamp: 1 }, virtualSize: 1 << 20, logicalSectorSize: 512, physicalSectorSize: 512, relativePath: 'a', absolutePath: 'b' };
  const bad: Array<[Parameters<typeof vhdDriver.create>[1], string]> = [
    [{ diskType: 'dynamic', virtualSize: 1000 }, 'INVALID_ARGUMENT'],
    [{ diskType: 'dynamic', virtualSize: 2041 * 1024 ** 3 }, 'INVALID_ARGUMENT'],
    [{ diskType: 'dynamic', virtualSize: 1 << 20, blockSize: 3000 }, 'INVALID_ARGUMENT'],
    [{ diskType: 'dynamic', virtualSize: 1 << 20, logicalSectorSize: 4096 }, 'UNSUPPORTED'],
    [{ diskType: 'differencing', virtualSize: 1 << 20 }, 'INVALID_ARGUMENT'],
    [{ diskType: 'differencing', virtualSize: 2 << 20, parent }, 'INVALID_ARGUMENT'],
    [{ diskType: 'differencing', virtualSize: 1 << 20, parent: { ...parent, identity: { format: 'vhdx', dataWriteGuid: '11111111-2222-4333-8444-555555555555' } } }, 'UNSUPPORTED'],
  ];
  for (const [opts, code] of bad) {
    await assert.rejects(vhdDriver.create(new MemorySource(), opts), (e) => isDiskchainError(e) && e.code === code, JSON.stringify(opts));
  }
});

test('write: read-only, alignment and range are enforced', async () => {
  const img = await sampleImage('dynamic');
  const ro = await vhdDriver.open(new MemorySource(img));
  await assert.rejects(ro.write(new Uint8Array(512), 0), (e) => isDiskchainError(e) && e.code === 'READ_ONLY');
  const rw = await vhdDriver.open(new MemorySource(img), { writable: true });
  await assert.rejects(rw.write(new Uint8Array(100), 0), (e) => isDiskchainError(e) && e.code === 'INVALID_ARGUMENT');
  await assert.rejects(rw.write(new Uint8Array(512), 3), (e) => isDiskchainError(e) && e.code === 'INVALID_ARGUMENT');
  await assert.rejects(rw.write(new Uint8Array(1024), rw.virtualSize - 512), (e) => isDiskchainError(e) && e.code === 'OUT_OF_RANGE');
  await assert.rejects(rw.read(new Uint8Array(1024), rw.virtualSize - 512), (e) => isDiskchainError(e) && e.code === 'OUT_OF_RANGE');
  await assert.rejects(vhdDriver.open(new MemorySource(img, { readOnly: true }), { writable: true }), (e) => isDiskchainError(e) && e.code === 'READ_ONLY');
});

test('differencing create: locators, parent name, identity link, details', async () => {
  const base = await vhdDriver.create(new MemorySource(), { diskType: 'dynamic', virtualSize: 8 << 20 });
  const child = await vhdDriver.create(new MemorySource(), {
    diskType: 'differencing', virtualSize: 8 << 20,
    parent: { identity: base.identity(), virtualSize: 8 << 20, logicalSectorSize: 512, physicalSectorSize: 512, relativePath: '.\\base.vhd', absolutePath: 'C:\\VMs\\base.vhd' },
  });
  assert.deepEqual(child.parent?.expected, base.identity());
  const d = child.details();
  assert.equal(d.parentUnicodeName, 'C:\\VMs\\base.vhd');
  assert.deepEqual((d.parentLocators as Array<{ platformCode: string; path: string }>).map((l) => [l.platformCode, l.path]), [['W2ku', 'C:\\VMs\\base.vhd'], ['W2ru', '.\\base.vhd']]);
  assert.equal(await child.allocatedBytes(), 0);
  assert.deepEqual(await child.map(0, 8 << 20), [{ offset: 0, length: 8 << 20, state: 'transparent' }]);
});

test('a dynamic disk whose footer is not sector aligned (stray bytes before it) is re-footed before the first allocation', async () => {
  const img = await sampleImage('dynamic');
  const odd = new Uint8Array(img.length + 100);
  odd.set(img.subarray(0, img.length - 512));
  odd.set(img.subarray(img.length - 512), img.length - 512 + 100);
  const src = new MemorySource(odd);
  const disk = await vhdDriver.open(src, { writable: true });
  const data = new Uint8Array(4096).fill(9);
  await disk.write(data, 3 * 64 * 1024);
  await disk.close();
  assert.equal((await src.size()) % 512, 0);
  assert.deepEqual((await vhdDriver.check(src)).filter((f) => f.severity !== 'info'), []);
  const again = await vhdDriver.open(src);
  const got = new Uint8Array(4096);
  await again.read(got, 3 * 64 * 1024);
  assert.deepEqual(got, data);
});
