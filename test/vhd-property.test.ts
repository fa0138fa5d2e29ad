import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import type { Extent, VirtualDisk } from '../src/formats/types.js';
import { vhdDriver } from '../src/formats/vhd/driver.js';
import { MemorySource } from '../src/io/memory-source.js';
import { pseudoRandomBytes } from './helpers/vhd-util.js';

type Op =
  | { kind: 'write'; sector: number; count: number; seed: number }
  | { kind: 'read'; sector: number; count: number }
  | { kind: 'map'; sector: number; count: number }
  | { kind: 'flush' }
  | { kind: 'reopen' };

const PARENT_ID = '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0';

/** The model: this layer's bytes and, per sector, whether the layer holds it (map says data). */
class Model {
  readonly bytes: Uint8Array;
  readonly present: Uint8Array;
  constructor(readonly size: number, readonly blockSize: number, readonly differencing: boolean) {
    this.bytes = new Uint8Array(size);
    this.present = new Uint8Array(size / 512);
  }
  write(data: Uint8Array, offset: number): void {
    this.bytes.set(data, offset);
    const first = offset / 512;
    const last = (offset + data.length) / 512;
    if (this.differencing) this.present.fill(1, first, last);
    else {
      // A dynamic disk's block becomes wholly present when first written.
      const spb = this.blockSize / 512;
      for (let b = Math.floor(first / spb); b * spb < last; b++) this.present.fill(1, b * spb, Math.min((b + 1) * spb, this.present.length));
    }
  }
  read(offset: number, length: number): Uint8Array {
    const out = this.bytes.slice(offset, offset + length);
    for (let s = 0; s < length / 512; s++) if (!this.present[offset / 512 + s]) out.fill(0, s * 512, s * 512 + 512);
    return out;
  }
  map(offset: number, length: number): Extent[] {
    const out: Extent[] = [];
    for (let s = offset / 512; s < (offset + length) / 512; s++) {
      const state = this.present[s] ? 'data' : 'transparent';
      const last = out[out.length - 1];
      if (last && last.state === state) last.length += 512;
      else out.push({ offset: s * 512, length: 512, state });
    }
    return out;
  }
}

function opArb(sectors: number): fc.Arbitrary<Op> {
  const range = fc.integer({ min: 0, max: sectors - 1 }).chain((sector) =>
    fc.integer({ min: 1, max: Math.min(600, sectors - sector) }).map((count) => ({ sector, count })),
  );
  return fc.oneof(
    { weight: 5, arbitrary: fc.tuple(range, fc.integer({ min: 1, max: 2 ** 31 - 1 })).map(([r, seed]) => ({ kind: 'write' as const, ...r, seed })) },
    { weight: 3, arbitrary: range.map((r) => ({ kind: 'read' as const, ...r })) },
    { weight: 2, arbitrary: range.map((r) => ({ kind: 'map' as const, ...r })) },
    { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
  );
}

async function run(differencing: boolean, blockSize: number, sizeSectors: number, ops: Op[]): Promise<void> {
  const size = sizeSectors * 512;
  const source = new MemorySource(new Uint8Array(0), { name: 'prop.vhd' });
  const model = new Model(size, blockSize, differencing);
  let disk: VirtualDisk = await vhdDriver.create(source, {
    diskType: differencing ? 'differencing' : 'dynamic',
    virtualSize: size,
    blockSize,
    ...(differencing
      ? {
          parent: {
            identity: { format: 'vhd' as const, uniqueId: PARENT_ID, timestamp: 12345 },
            virtualSize: size, logicalSectorSize: 512, physicalSectorSize: 512,
            relativePath: '.\\parent.vhd', absolutePath: 'C:\\vms\\parent.vhd',
          },
        }
      : {}),
  });
  for (const op of ops) {
    if (op.kind === 'write') {
      const data = pseudoRandomBytes(op.count * 512, op.seed);
      await disk.write(data, op.sector * 512);
      model.write(data, op.sector * 512);
    } else if (op.kind === 'read') {
      const buf = new Uint8Array(op.count * 512).fill(0x5a);
      await disk.read(buf, op.sector * 512);
      assert.deepEqual(Buffer.from(buf), Buffer.from(model.read(op.sector * 512, op.count * 512)));
    } else if (op.kind === 'map') {
      assert.deepEqual(await disk.map(op.sector * 512, op.count * 512), model.map(op.sector * 512, op.count * 512));
    } else if (op.kind === 'flush') {
      await disk.flush();
    } else {
      await disk.close();
      assert.deepEqual((await vhdDriver.check(source)).filter((f) => f.severity !== 'info'), []);
      disk = await vhdDriver.open(source, { writable: true });
    }
  }
  await disk.close();
  const reopened = await vhdDriver.open(source);
  const all = new Uint8Array(size);
  await reopened.read(all, 0);
  assert.deepEqual(Buffer.from(all), Buffer.from(model.read(0, size)));
  assert.deepEqual(await reopened.map(0, size), model.map(0, size));
  if (differencing) assert.deepEqual(reopened.parent?.expected, { format: 'vhd', uniqueId: PARENT_ID, timestamp: 12345 });
}

for (const differencing of [false, true]) {
  test(`property: random writes/reads/maps/flushes/reopens of a ${differencing ? 'differencing' : 'dynamic'} VHD match an in-memory model`, async () => {
    const config = fc.record({
      blockSize: fc.constantFrom(512, 4096, 65536, 128 * 1024),
      sizeSectors: fc.integer({ min: 1, max: 2000 }),
    });
    await fc.assert(
      fc.asyncProperty(
        config.chain((c) => fc.tuple(fc.constant(c), fc.array(opArb(c.sizeSectors), { minLength: 1, maxLength: 40 }))),
        async ([c, ops]) => run(differencing, c.blockSize, c.sizeSectors, ops),
      ),
      { numRuns: 150 },
    );
  });
}
