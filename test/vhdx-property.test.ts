/**
 * Property tests: a VHDX layer (dynamic, fixed, differencing) against a plain Uint8Array model,
 * under random sequences of writes, reads, flushes, checks and close+reopen, on a MemorySource.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemorySource } from '../src/io/memory-source.js';
import { vhdxDriver } from '../src/formats/vhdx/driver.js';
import type { DiskType, VirtualDisk } from '../src/formats/types.js';
import { assertBytesEqual, assertMapContract, composeRead, describeFindings, errors, MIB, randomBytesFrom } from './helpers/vhdx-util.js';

type Cmd =
  | { k: 'write'; at: number; size: number; zero: boolean; seed: number }
  | { k: 'read'; at: number; size: number }
  | { k: 'flush' }
  | { k: 'reopen' }
  | { k: 'check' };

/** Positions and sizes are drawn as fractions (0..2^20) and scaled to the disk at hand. */
const FRACTION = 2 ** 20;
const cmdArb: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('write' as const), at: fc.nat(FRACTION - 1), size: fc.nat(FRACTION - 1), zero: fc.nat(9).map((n) => n < 3), seed: fc.nat() }) },
  { weight: 4, arbitrary: fc.record({ k: fc.constant('read' as const), at: fc.nat(FRACTION - 1), size: fc.nat(FRACTION - 1) }) },
  { weight: 1, arbitrary: fc.constant({ k: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'check' as const }) },
);

interface Geometry {
  blockSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  virtualSize: number;
}

/** Block size 1/2/4 MiB, sectors 512/4096, 1..3 whole blocks plus an odd tail of sectors (never a block multiple). */
const geometryArb: fc.Arbitrary<Geometry> = fc
  .record({
    blockMiB: fc.constantFrom(1, 2, 4),
    logicalSectorSize: fc.constantFrom(512, 4096),
    physicalSectorSize: fc.constantFrom(512, 4096),
    blocks: fc.integer({ min: 0, max: 3 }),
    tailFraction: fc.integer({ min: 1, max: 1000 }),
  })
  .map(({ blockMiB, logicalSectorSize, physicalSectorSize, blocks, tailFraction }) => {
    const blockSize = blockMiB * MIB;
    const sectorsPerBlock = blockSize / logicalSectorSize;
    const tailSectors = Math.max(1, Math.min(sectorsPerBlock - 1, Math.floor((tailFraction / 1000) * sectorsPerBlock)));
    return { blockSize, logicalSectorSize, physicalSectorSize, virtualSize: blocks * blockSize + tailSectors * logicalSectorSize };
  });

/** A sector-aligned write range: mostly small, some a block or more (spanning blocks), clamped to the disk. */
function writeRange(g: Geometry, at: number, size: number): [number, number] {
  const lss = g.logicalSectorSize;
  const sectors = g.virtualSize / lss;
  const first = Math.floor((at / FRACTION) * sectors);
  const band = size % 4;
  const scale = band === 0 ? 8 : band === 1 ? g.blockSize / lss : band === 2 ? (2.5 * g.blockSize) / lss : 64;
  const count = Math.max(1, Math.min(sectors - first, 1 + Math.floor(((size >>> 2) / (FRACTION / 4)) * scale)));
  return [first * lss, count * lss];
}

/** An arbitrary byte range (unaligned), up to about two blocks. */
function readRange(g: Geometry, at: number, size: number): [number, number] {
  const offset = Math.floor((at / FRACTION) * g.virtualSize);
  const length = Math.min(g.virtualSize - offset, Math.floor((size / FRACTION) * 2 * g.blockSize) + 1);
  return [offset, Math.max(0, length)];
}

async function assertNoErrors(source: MemorySource, when: string): Promise<void> {
  const findings = await vhdxDriver.check(source);
  assert.deepEqual(errors(findings), [], `check() after ${when} reports errors:\n${describeFindings(findings)}`);
}

/** Runs `cmds` against a layer and the model; `readLayer` reads what a reader of the layer (or chain) sees. */
async function runCommands(
  g: Geometry,
  source: MemorySource,
  first: VirtualDisk,
  model: Uint8Array,
  cmds: Cmd[],
  readLayer: (disk: VirtualDisk, target: Uint8Array, offset: number) => Promise<void>,
): Promise<void> {
  let disk = first;
  const log: string[] = [];
  const ctx = (): string => `after [${log.slice(-6).join(', ')}] (${log.length} commands)`;
  try {
    for (const c of cmds) {
      switch (c.k) {
        case 'write': {
          const [offset, length] = writeRange(g, c.at, c.size);
          const data = c.zero ? new Uint8Array(length) : randomBytesFrom(c.seed, length);
          log.push(`write ${offset}+${length}${c.zero ? ' zeros' : ''}`);
          await disk.write(data, offset);
          model.set(data, offset);
          break;
        }
        case 'read': {
          const [offset, length] = readRange(g, c.at, c.size);
          log.push(`read ${offset}+${length}`);
          const got = new Uint8Array(length);
          await readLayer(disk, got, offset);
          assertBytesEqual(got, model.subarray(offset, offset + length), `read ${offset}+${length} ${ctx()}`);
          break;
        }
        case 'flush':
          log.push('flush');
          await disk.flush();
          await assertNoErrors(source, `flush ${ctx()}`);
          break;
        case 'reopen':
          log.push('reopen');
          await disk.close();
          await assertNoErrors(source, `close ${ctx()}`);
          disk = await vhdxDriver.open(source, { writable: true });
          break;
        case 'check':
          log.push('check');
          // The file as it stands mid-session (dirty metadata not yet committed) must never look corrupt.
          assert.deepEqual(errors(await vhdxDriver.check(source)), [], `check() mid-session ${ctx()}`);
          break;
      }
    }
    // Final: the whole disk, then a read-only reopen of the closed file sees the same bytes.
    const all = new Uint8Array(g.virtualSize);
    await readLayer(disk, all, 0);
    assertBytesEqual(all, model, `whole-disk read ${ctx()}`);
    await disk.close();
    await assertNoErrors(source, `final close ${ctx()}`);
    const ro = await vhdxDriver.open(source);
    const again = new Uint8Array(g.virtualSize);
    await readLayer(ro, again, 0);
    assertBytesEqual(again, model, `whole-disk read after read-only reopen ${ctx()}`);
    await ro.close();
  } catch (e) {
    if (e instanceof Error && !e.message.includes('commands)')) e.message += `\n  ${ctx()}`;
    throw e;
  }
}

const ownRead = (disk: VirtualDisk, target: Uint8Array, offset: number): Promise<void> => disk.read(target, offset);

for (const diskType of ['dynamic', 'fixed'] as DiskType[]) {
  test(`property: ${diskType} VHDX behaves like a byte array under random writes/reads/flush/reopen`, async () => {
    await fc.assert(
      fc.asyncProperty(geometryArb, fc.array(cmdArb, { minLength: 1, maxLength: 30 }), async (g, cmds) => {
        const source = new MemorySource(new Uint8Array(0), { name: `prop-${diskType}.vhdx` });
        const disk = await vhdxDriver.create(source, { diskType, virtualSize: g.virtualSize, blockSize: g.blockSize, logicalSectorSize: g.logicalSectorSize, physicalSectorSize: g.physicalSectorSize });
        assert.equal(disk.virtualSize, g.virtualSize);
        assert.equal(disk.diskType, diskType);
        assert.equal(disk.blockSize, g.blockSize);
        assert.equal(disk.logicalSectorSize, g.logicalSectorSize);
        await assertNoErrors(source, 'create');
        await runCommands(g, source, disk, new Uint8Array(g.virtualSize), cmds, ownRead);
      }),
      { numRuns: diskType === 'fixed' ? 40 : 100, endOnFailure: true, includeErrorInReport: true },
    );
  });
}

test('property: differencing VHDX over a random parent reads like the model (composed per map() extent)', async () => {
  await fc.assert(
    fc.asyncProperty(
      geometryArb,
      fc.constantFrom(1, 2, 4),
      fc.array(fc.record({ at: fc.nat(FRACTION - 1), size: fc.nat(FRACTION - 1), seed: fc.nat() }), { maxLength: 6 }),
      fc.array(cmdArb, { minLength: 1, maxLength: 30 }),
      async (g, childBlockMiB, parentWrites, cmds) => {
        const parentSource = new MemorySource(new Uint8Array(0), { name: 'p.vhdx' });
        const parentW = await vhdxDriver.create(parentSource, { diskType: 'dynamic', virtualSize: g.virtualSize, blockSize: g.blockSize, logicalSectorSize: g.logicalSectorSize, physicalSectorSize: g.physicalSectorSize });
        const model = new Uint8Array(g.virtualSize);
        for (const w of parentWrites) {
          const [offset, length] = writeRange(g, w.at, w.size);
          const data = randomBytesFrom(w.seed, length);
          await parentW.write(data, offset);
          model.set(data, offset);
        }
        const identity = parentW.identity();
        await parentW.close();
        const parent = await vhdxDriver.open(parentSource);
        assert.deepEqual(parent.identity(), identity, 'a read-only open changed the parent identity');

        const childSource = new MemorySource(new Uint8Array(0), { name: 'c.avhdx' });
        const child = await vhdxDriver.create(childSource, {
          diskType: 'differencing',
          virtualSize: g.virtualSize,
          blockSize: childBlockMiB * MIB,
          parent: { identity, virtualSize: g.virtualSize, logicalSectorSize: g.logicalSectorSize, physicalSectorSize: g.physicalSectorSize, relativePath: '.\\p.vhdx', absolutePath: '/x/p.vhdx' },
        });
        assert.equal(child.diskType, 'differencing');
        assert.deepEqual(child.parent?.expected, identity);
        const cg = { ...g, blockSize: childBlockMiB * MIB };
        await assertNoErrors(childSource, 'create child');
        const readChain = (disk: VirtualDisk, target: Uint8Array, offset: number): Promise<void> => composeRead(disk, (t, o) => parent.read(t, o), target, offset);
        await runCommands(cg, childSource, child, model, cmds, readChain);
        await parent.close();
      },
    ),
    { numRuns: 80, endOnFailure: true, includeErrorInReport: true },
  );
});

test('property: read() of a differencing child returns its own data and zeros elsewhere', async () => {
  // Independent of composition: the layer's own read() must give zeros for transparent ranges.
  await fc.assert(
    fc.asyncProperty(geometryArb, fc.array(fc.record({ at: fc.nat(FRACTION - 1), size: fc.nat(FRACTION - 1), seed: fc.nat() }), { minLength: 1, maxLength: 8 }), async (g, writes) => {
      const parentSource = new MemorySource(new Uint8Array(0), { name: 'p.vhdx' });
      const parent = await vhdxDriver.create(parentSource, { diskType: 'dynamic', virtualSize: g.virtualSize, blockSize: g.blockSize, logicalSectorSize: g.logicalSectorSize });
      await parent.write(randomBytesFrom(1, g.logicalSectorSize), 0);
      const identity = parent.identity();
      await parent.close();
      const childSource = new MemorySource(new Uint8Array(0), { name: 'c.avhdx' });
      const child = await vhdxDriver.create(childSource, {
        diskType: 'differencing',
        virtualSize: g.virtualSize,
        blockSize: g.blockSize,
        parent: { identity, virtualSize: g.virtualSize, logicalSectorSize: g.logicalSectorSize, physicalSectorSize: 4096, relativePath: '.\\p.vhdx', absolutePath: '/x/p.vhdx' },
      });
      const own = new Uint8Array(g.virtualSize);
      const present = new Uint8Array(g.virtualSize / g.logicalSectorSize);
      for (const w of writes) {
        const [offset, length] = writeRange(g, w.at, w.size);
        const data = randomBytesFrom(w.seed, length);
        await child.write(data, offset);
        own.set(data, offset);
        present.fill(1, offset / g.logicalSectorSize, (offset + length) / g.logicalSectorSize);
      }
      await child.flush();
      const got = new Uint8Array(g.virtualSize);
      await child.read(got, 0);
      assertBytesEqual(got, own, 'child.read()');
      // Every written sector is 'data' in map(); every unwritten one is transparent.
      for (const e of await child.map(0, g.virtualSize)) {
        for (let s = e.offset / g.logicalSectorSize; s < (e.offset + e.length) / g.logicalSectorSize; s++) {
          assert.equal(e.state === 'data', present[s] === 1, `sector ${s} is ${e.state} but was ${present[s] ? '' : 'not '}written`);
        }
      }
      await child.close();
    }),
    { numRuns: 40, endOnFailure: true, includeErrorInReport: true },
  );
});

test('property: map() honours the VirtualDisk contract (exact cover, adjacent equal states merged)', async () => {
  await fc.assert(
    fc.asyncProperty(
      geometryArb,
      fc.constantFrom<DiskType>('dynamic', 'fixed', 'differencing'),
      fc.array(fc.record({ at: fc.nat(FRACTION - 1), size: fc.nat(FRACTION - 1), seed: fc.nat() }), { minLength: 1, maxLength: 8 }),
      fc.array(fc.record({ at: fc.nat(FRACTION - 1), size: fc.nat(FRACTION - 1) }), { minLength: 1, maxLength: 5 }),
      async (g, diskType, writes, ranges) => {
        let disk: VirtualDisk;
        if (diskType === 'differencing') {
          const ps = new MemorySource(new Uint8Array(0), { name: 'p.vhdx' });
          const p = await vhdxDriver.create(ps, { diskType: 'dynamic', virtualSize: g.virtualSize, blockSize: g.blockSize, logicalSectorSize: g.logicalSectorSize });
          const identity = p.identity();
          await p.close();
          disk = await vhdxDriver.create(new MemorySource(new Uint8Array(0), { name: 'c.avhdx' }), {
            diskType,
            virtualSize: g.virtualSize,
            blockSize: g.blockSize,
            parent: { identity, virtualSize: g.virtualSize, logicalSectorSize: g.logicalSectorSize, physicalSectorSize: 4096, relativePath: '.\\p.vhdx', absolutePath: '/x/p.vhdx' },
          });
        } else {
          disk = await vhdxDriver.create(new MemorySource(new Uint8Array(0), { name: 'd.vhdx' }), { diskType, virtualSize: g.virtualSize, blockSize: g.blockSize, logicalSectorSize: g.logicalSectorSize });
        }
        for (const w of writes) {
          const [offset, length] = writeRange(g, w.at, w.size);
          await disk.write(randomBytesFrom(w.seed, length), offset);
        }
        assertMapContract(await disk.map(0, g.virtualSize), 0, g.virtualSize, `${diskType} map(0, ${g.virtualSize})`);
        for (const r of ranges) {
          const [offset, length] = readRange(g, r.at, r.size);
          if (length > 0) assertMapContract(await disk.map(offset, length), offset, length, `${diskType} map(${offset}, ${length})`);
        }
        await disk.close();
      },
    ),
    { numRuns: 60, endOnFailure: true, includeErrorInReport: true },
  );
});

test('writes out of block order give non-file-contiguous data blocks; map() still merges them into one extent', async () => {
  // A deterministic instance of the property above, for a clear failure message.
  const disk = await vhdxDriver.create(new MemorySource(new Uint8Array(0), { name: 'order.vhdx' }), { diskType: 'dynamic', virtualSize: 4 * MIB, blockSize: MIB });
  await disk.write(randomBytesFrom(7, 512), MIB); // block 1 is allocated first
  await disk.write(randomBytesFrom(8, 512), 0); // block 0 lands after it in the file
  const extents = await disk.map(0, 2 * MIB);
  assertMapContract(extents, 0, 2 * MIB, 'map(0, 2 MiB)');
  assert.deepEqual(extents, [{ offset: 0, length: 2 * MIB, state: 'data' }]);
  await disk.close();
});
