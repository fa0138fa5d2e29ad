import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DiskType, VirtualDisk } from '../src/formats/types.js';
import { vhdDriver } from '../src/formats/vhd/driver.js';
import { MemorySource } from '../src/io/memory-source.js';
import { pseudoRandomBytes, RecordingSource } from './helpers/vhd-util.js';

interface Done {
  offset: number;
  data: Uint8Array;
  /** Index in the recorded operations by which this write was made durable by a flush(). */
  durableAt: number;
}

async function newImage(diskType: DiskType, size: number, blockSize: number): Promise<Uint8Array> {
  const src = new MemorySource(new Uint8Array(0), { name: 'crash.vhd' });
  const disk = await vhdDriver.create(src, {
    diskType, virtualSize: size, blockSize,
    ...(diskType === 'differencing'
      ? { parent: { identity: { format: 'vhd' as const, uniqueId: 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee', timestamp: 1 }, virtualSize: size, logicalSectorSize: 512, physicalSectorSize: 512, relativePath: 'p.vhd', absolutePath: 'C:\\p.vhd' } }
      : {}),
  });
  await disk.close();
  return src.snapshot();
}

/** Runs a workload on a recording source; returns the writes with their durability points. */
async function workload(rec: RecordingSource, size: number, seed: number): Promise<Done[]> {
  const disk = await vhdDriver.open(rec, { writable: true });
  const r = pseudoRandomBytes(400, seed);
  const sectors = size / 512;
  const done: Done[] = [];
  const pending: Done[] = [];
  for (let i = 0; i < 40; i++) {
    const start = ((r[i * 4]! << 8) | r[i * 4 + 1]!) % sectors;
    const count = Math.min(1 + (r[i * 4 + 2]! % 40), sectors - start);
    const data = pseudoRandomBytes(count * 512, seed * 131 + i);
    await disk.write(data, start * 512);
    const w = { offset: start * 512, data, durableAt: Infinity };
    done.push(w);
    pending.push(w);
    if (r[i * 4 + 3]! % 3 === 0) {
      await disk.flush();
      for (const p of pending.splice(0)) p.durableAt = rec.ops.length;
    }
  }
  await disk.close();
  for (const p of pending.splice(0)) p.durableAt = rec.ops.length;
  return done;
}

/** Expected content of sectors that only durable writes touched (later writes may or may not have landed). */
function durableExpectations(done: Done[], crashAt: number, size: number): { bytes: Uint8Array; known: Uint8Array } {
  const bytes = new Uint8Array(size);
  const known = new Uint8Array(size / 512);
  for (const w of done) {
    const first = w.offset / 512;
    const n = w.data.length / 512;
    if (w.durableAt <= crashAt) {
      bytes.set(w.data, w.offset);
      known.fill(1, first, first + n);
    } else {
      known.fill(0, first, first + n);
    }
  }
  return { bytes, known };
}

async function verify(disk: VirtualDisk, exp: { bytes: Uint8Array; known: Uint8Array }, differencing: boolean, what: string): Promise<void> {
  const all = new Uint8Array(disk.virtualSize);
  await disk.read(all, 0);
  const map = differencing ? await disk.map(0, disk.virtualSize) : [];
  for (let s = 0; s < exp.known.length; s++) {
    if (!exp.known[s]) continue;
    assert.ok(Buffer.compare(all.subarray(s * 512, s * 512 + 512), exp.bytes.subarray(s * 512, s * 512 + 512)) === 0, `${what}: sector ${s} lost a flushed write`);
    if (differencing) {
      const ext = map.find((e) => e.offset <= s * 512 && s * 512 < e.offset + e.length)!;
      assert.equal(ext.state, 'data', `${what}: sector ${s} not mapped as data`);
    }
  }
}

for (const diskType of ['dynamic', 'differencing'] as const) {
  for (const [blockSize, seed] of [[4096, 3], [65536, 5], [4096, 11]] as const) {
    test(`crash at every operation of a ${diskType} VHD workload (block ${blockSize}, seed ${seed}): opens, checks clean, keeps flushed writes`, async () => {
      const size = 96 * 4096;
      const initial = await newImage(diskType, size, blockSize);
      const rec = new RecordingSource(new MemorySource(initial, { name: 'crash.vhd' }), initial);
      const done = await workload(rec, size, seed);
      assert.ok(rec.flushPoints().length > 5);
      for (let k = 0; k <= rec.ops.length; k++) {
        const crashed = await rec.replay(k);
        const findings = await vhdDriver.check(crashed);
        assert.deepEqual(findings.filter((f) => f.severity === 'error'), [], `crash after ${k} ops: ${JSON.stringify(findings)}`);
        const disk = await vhdDriver.open(crashed);
        const exp = durableExpectations(done, k, size);
        await verify(disk, exp, diskType === 'differencing', `crash after ${k} ops`);
        // Every few points: reopen for writing (repairing the footer), write, and reopen again.
        if (k % 7 === 0) {
          const w = await vhdDriver.open(crashed, { writable: true });
          const extra = pseudoRandomBytes(3 * 4096, k + 1);
          const at = (k * 4096) % (size - extra.length);
          await w.write(extra, at);
          await w.close();
          assert.deepEqual((await vhdDriver.check(crashed)).filter((f) => f.severity !== 'info'), [], `after repair at ${k}`);
          const again = await vhdDriver.open(crashed);
          const got = new Uint8Array(extra.length);
          await again.read(got, at);
          assert.deepEqual(Buffer.from(got), Buffer.from(extra));
          exp.bytes.set(extra, at);
          exp.known.fill(1, at / 512, (at + extra.length) / 512);
          await verify(again, exp, diskType === 'differencing', `repaired after ${k} ops`);
        }
      }
    });
  }
}

for (const diskType of ['dynamic', 'differencing'] as const) {
  test(`a ${diskType} VHD holds new BAT entries and bitmaps until flush(): two flushes for many allocating writes, and the file as it stands before flush() reads the old content`, async () => {
    const size = 64 * 4096;
    const initial = await newImage(diskType, size, 4096);
    const rec = new RecordingSource(new MemorySource(initial, { name: 'held.vhd' }), initial);
    const disk = await vhdDriver.open(rec, { writable: true });
    const flushesAtOpen = rec.flushPoints().length;
    const writes: Array<[number, Uint8Array]> = [];
    // 16 new blocks, then a second write into each (a new bitmap bit in a differencing disk).
    for (let i = 0; i < 16; i++) writes.push([i * 2 * 4096, pseudoRandomBytes(1024, 100 + i)]);
    for (let i = 0; i < 16; i++) writes.push([i * 2 * 4096 + 2048, pseudoRandomBytes(512, 200 + i)]);
    for (const [at, data] of writes) await disk.write(data, at);
    assert.equal(rec.flushPoints().length, flushesAtOpen, 'no flush while writing');

    const asItStands = await rec.replay(rec.ops.length);
    assert.deepEqual((await vhdDriver.check(asItStands)).filter((f) => f.severity !== 'info'), [], 'before flush: clean, with a footer at the end');
    const old = await vhdDriver.open(asItStands);
    const seen = new Uint8Array(size);
    await old.read(seen, 0);
    assert.ok(seen.every((b) => b === 0), 'before flush: no BAT entry names the new blocks');
    if (diskType === 'differencing') assert.ok((await old.map(0, size)).every((e) => e.state === 'transparent'));

    await disk.flush();
    assert.equal(rec.flushPoints().length - flushesAtOpen, 2, 'one flush for the data, one for the BAT and bitmaps');
    const expected = new Uint8Array(size);
    for (const [at, data] of writes) expected.set(data, at);
    const after = await vhdDriver.open(await rec.replay(rec.ops.length));
    const got = new Uint8Array(size);
    await after.read(got, 0);
    assert.deepEqual(Buffer.from(got), Buffer.from(expected));
    if (diskType === 'differencing') {
      const data = (await after.map(0, size)).filter((e) => e.state === 'data').reduce((n, e) => n + e.length, 0);
      assert.equal(data, 16 * (1024 + 512));
    }
    await disk.close();
  });
}
