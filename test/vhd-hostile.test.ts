import assert from 'node:assert/strict';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { vhdDriver } from '../src/formats/vhd/driver.js';
import { FileSource } from '../src/io/file-source.js';
import { isDiskchainError } from '../src/io/errors.js';
import { MemorySource } from '../src/io/memory-source.js';
import { patchFooter, patchHeader, sampleImage, tableOffset } from './helpers/vhd-images.js';
import { sha256, withTempDir } from './helpers/vhd-util.js';

type Expect = { error: 'CORRUPT' | 'TRUNCATED' | 'UNSUPPORTED' } | { opens: true; warning?: string };

const cases: Array<{ name: string; make: () => Promise<Uint8Array>; expect: Expect }> = [
  { name: 'block size 0', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setUint32(32, 0)), expect: { error: 'CORRUPT' } },
  { name: 'block size 0x80000000', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setUint32(32, 0x80000000)), expect: { error: 'CORRUPT' } },
  { name: 'block size 0x12345678', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setUint32(32, 0x12345678)), expect: { error: 'CORRUPT' } },
  { name: 'block size 256 bytes', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setUint32(32, 256)), expect: { error: 'CORRUPT' } },
  { name: 'max table entries x block size smaller than the disk', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setUint32(28, 3)), expect: { error: 'CORRUPT' } },
  { name: 'max table entries 0xFFFFFFFF (only the needed entries are read)', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setUint32(28, 0xffffffff)), expect: { opens: true } },
  {
    name: 'a 1 TiB disk of 512-byte blocks (2^31 BAT entries: refused before allocating)',
    make: async () => patchHeader(patchFooter(await sampleImage('dynamic'), (v) => v.setBigUint64(48, 2n ** 40n)), (v) => { v.setUint32(28, 0xffffffff); v.setUint32(32, 512); }),
    expect: { error: 'UNSUPPORTED' },
  },
  { name: 'BAT offset 2^62', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setBigUint64(16, 2n ** 62n)), expect: { error: 'CORRUPT' } },
  { name: 'BAT offset past the end of the file', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setBigUint64(16, 10n ** 9n)), expect: { error: 'CORRUPT' } },
  { name: 'BAT overlapping the dynamic header', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setBigUint64(16, 1024n)), expect: { error: 'CORRUPT' } },
  {
    name: 'BAT entry past the end of the file',
    make: async () => { const i = await sampleImage('dynamic'); new DataView(i.buffer).setUint32(tableOffset(i), 0x00ffffff); return i; },
    expect: { error: 'CORRUPT' },
  },
  {
    name: 'BAT entry overlapping the headers',
    make: async () => { const i = await sampleImage('dynamic'); new DataView(i.buffer).setUint32(tableOffset(i), 1); return i; },
    expect: { error: 'CORRUPT' },
  },
  {
    name: 'two BAT entries sharing a block',
    make: async () => { const i = await sampleImage('dynamic'); const v = new DataView(i.buffer); v.setUint32(tableOffset(i) + 4, v.getUint32(tableOffset(i))); return i; },
    expect: { error: 'CORRUPT' },
  },
  { name: 'dynamic header checksum wrong', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setUint32(36, 1234), false), expect: { error: 'CORRUPT' } },
  { name: 'dynamic header cookie wrong', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setUint8(0, 0x58)), expect: { error: 'CORRUPT' } },
  { name: 'dynamic header version 2.0', make: async () => patchHeader(await sampleImage('dynamic'), (v) => v.setUint32(24, 0x00020000)), expect: { error: 'UNSUPPORTED' } },
  {
    name: 'end footer checksum wrong: falls back to the copy at offset 0',
    make: async () => { const i = await sampleImage('dynamic'); i[i.length - 512 + 70] ^= 0xff; return i; },
    expect: { opens: true, warning: 'VHD_FOOTER_TORN' },
  },
  {
    name: 'end footer missing (file cut): falls back to the copy at offset 0',
    make: async () => (await sampleImage('dynamic')).slice(0, -512),
    expect: { opens: true, warning: 'VHD_FOOTER_MISSING' },
  },
  {
    name: 'both footers with wrong checksums',
    make: async () => { const i = await sampleImage('dynamic'); i[i.length - 512 + 70] ^= 0xff; i[70] ^= 0xff; return i; },
    expect: { error: 'CORRUPT' },
  },
  {
    name: 'fixed disk with a damaged footer (no copy to fall back to)',
    make: async () => { const i = await sampleImage('fixed'); i[i.length - 512 + 70] ^= 0xff; return i; },
    expect: { error: 'CORRUPT' },
  },
  { name: 'fixed disk shorter than its current size', make: async () => patchFooter(await sampleImage('fixed'), (v) => v.setBigUint64(48, 10n ** 9n)), expect: { error: 'TRUNCATED' } },
  { name: 'current size 2^60', make: async () => patchFooter(await sampleImage('dynamic'), (v) => v.setBigUint64(48, 2n ** 60n)), expect: { error: 'UNSUPPORTED' } },
  { name: 'current size 2^64-1', make: async () => patchFooter(await sampleImage('fixed'), (v) => v.setBigUint64(48, 2n ** 64n - 1n)), expect: { error: 'UNSUPPORTED' } },
  { name: 'current size not a multiple of 512', make: async () => patchFooter(await sampleImage('dynamic'), (v) => v.setBigUint64(48, 1000n)), expect: { error: 'CORRUPT' } },
  { name: 'data offset 2^63', make: async () => patchFooter(await sampleImage('dynamic'), (v) => v.setBigUint64(16, 2n ** 63n)), expect: { error: 'CORRUPT' } },
  { name: 'data offset past the end of the file', make: async () => patchFooter(await sampleImage('dynamic'), (v) => v.setBigUint64(16, 10n ** 8n)), expect: { error: 'CORRUPT' } },
  { name: 'disk type 1 (deprecated)', make: async () => patchFooter(await sampleImage('dynamic'), (v) => v.setUint32(60, 1)), expect: { error: 'UNSUPPORTED' } },
  { name: 'disk type 99', make: async () => patchFooter(await sampleImage('fixed'), (v) => v.setUint32(60, 99)), expect: { error: 'UNSUPPORTED' } },
  { name: 'file format version 2.0', make: async () => patchFooter(await sampleImage('dynamic'), (v) => v.setUint32(12, 0x00020000)), expect: { error: 'UNSUPPORTED' } },
  {
    name: 'parent locator with data length 0xFFFFFFFF (locator skipped, reported)',
    make: async () => patchHeader(await sampleImage('differencing'), (v) => v.setUint32(576 + 8, 0xffffffff)),
    expect: { opens: true, warning: 'VHD_LOCATOR' },
  },
  {
    name: 'parent locator data past the end of the file',
    make: async () => patchHeader(await sampleImage('differencing'), (v) => v.setBigUint64(576 + 24 + 16, 2n ** 50n)),
    expect: { opens: true, warning: 'VHD_LOCATOR' },
  },
  { name: 'empty file', make: async () => new Uint8Array(0), expect: { error: 'TRUNCATED' } },
  { name: '100 random bytes', make: async () => new Uint8Array(100).fill(7), expect: { error: 'TRUNCATED' } },
  { name: '4 KiB of zeros', make: async () => new Uint8Array(4096), expect: { error: 'CORRUPT' } },
];

for (const c of cases) {
  test(`hostile VHD: ${c.name}`, async () => {
    const { dir, cleanup } = withTempDir();
    try {
      const path = join(dir, 'hostile.vhd');
      writeFileSync(path, await c.make());
      const before = sha256(readFileSync(path));
      const src = await FileSource.open(path);
      const t0 = Date.now();
      let disk;
      try {
        disk = await vhdDriver.open(src);
        assert.ok('opens' in c.expect, `expected ${JSON.stringify(c.expect)}, but it opened`);
        // Reading everything stays within the file and the virtual size.
        const buf = new Uint8Array(disk.virtualSize);
        await disk.read(buf, 0);
        await disk.map(0, disk.virtualSize);
      } catch (e) {
        assert.ok(isDiskchainError(e), `not a DiskchainError: ${String(e)}`);
        assert.ok('error' in c.expect, `unexpected ${e.code}: ${e.message}`);
        assert.equal(e.code, c.expect.error, e.message);
        assert.equal(e.details.file, path);
        assert.equal(typeof e.details.offset, 'number');
      }
      const findings = await vhdDriver.check(src);
      if ('error' in c.expect) {
        assert.ok(findings.some((f) => f.severity === 'error' && f.code === (c.expect as { error: string }).error && f.file === path), JSON.stringify(findings));
      } else {
        assert.deepEqual(findings.filter((f) => f.severity === 'error'), []);
        if (c.expect.warning) assert.ok(findings.some((f) => f.code === (c.expect as { warning: string }).warning), JSON.stringify(findings));
      }
      assert.ok(Date.now() - t0 < 3000, 'bounded time');
      await src.close();
      assert.equal(sha256(readFileSync(path)), before, 'file unchanged');
    } finally {
      cleanup();
    }
  });
}

test('hostile VHD: random byte corruption of the metadata gives a usable disk or a typed error, quickly', async () => {
  const images = [await sampleImage('dynamic', 4096), await sampleImage('differencing', 4096), await sampleImage('fixed', 4096)];
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 2 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()), { minLength: 1, maxLength: 8 }),
      fc.boolean(),
      async (which, edits, fixChecksums) => {
        let img: Uint8Array = new Uint8Array(images[which]!);
        for (const [pos, value, atEnd] of edits) {
          const at = atEnd ? img.length - 512 + (pos % 512) : pos % Math.min(img.length, 4096);
          img[at] = value;
        }
        if (fixChecksums) {
          img = patchFooter(img, () => {});
          if (which !== 2) img = patchHeader(img, () => {});
        }
        const before = sha256(img);
        const src = new MemorySource(img, { name: 'fuzz.vhd', readOnly: true });
        const t0 = Date.now();
        try {
          const disk = await vhdDriver.open(src);
          const buf = new Uint8Array(Math.min(disk.virtualSize, 1 << 20));
          await disk.read(buf, 0);
          await disk.map(0, disk.virtualSize);
        } catch (e) {
          assert.ok(isDiskchainError(e), `not a DiskchainError: ${String(e)}`);
          assert.ok(['CORRUPT', 'TRUNCATED', 'UNSUPPORTED'].includes(e.code), e.code);
        }
        const findings = await vhdDriver.check(src);
        assert.ok(Array.isArray(findings));
        assert.ok(Date.now() - t0 < 2000);
        assert.equal(sha256(src.snapshot()), before);
      },
    ),
    { numRuns: 400 },
  );
});
