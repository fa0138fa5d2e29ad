/**
 * Writes through the NBD server against a plain model: random sequences of WRITE (aligned or not, FUA),
 * WRITE_ZEROES (with and without NO_HOLE), TRIM, FLUSH and READ on writable differencing exports (VHDX
 * and VHD). After the server closes, the files alone must read as the model (trimmed bytes excepted:
 * NBD leaves them undefined) and pass check(). Plus the write-zeroes mapping onto the formats.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { checkDisk } from '../src/api/check.js';
import { createChild, createDisk } from '../src/api/create.js';
import { buildChain, restore } from './helpers/merge-chain.js';
import { readChain } from './helpers/read-chain.js';
import { CMD, FLAG, NbdClient } from './helpers/nbd-client.js';
import { serveChain } from './helpers/nbd-serve.js';
import { describeFindings, MIB, randomBytesFrom, tempDir } from './helpers/vhdx-util.js';

const SIZE = 12 * MIB;
let dir: string;
let cleanup: () => void;
const pristine: Record<'vhdx' | 'vhd', string[]> = { vhdx: [], vhd: [] };
before(async () => {
  ({ dir, cleanup } = tempDir('diskchain-nbd-writes-'));
  pristine.vhdx = await buildChain(join(dir, 'vhdx'), 'vhdx', 21, SIZE);
  pristine.vhd = await buildChain(join(dir, 'vhd'), 'vhd', 22, SIZE);
});
after(() => cleanup?.());

/** Compares outside the undefined (trimmed, not since rewritten) bytes. */
function assertModel(actual: Uint8Array, model: Uint8Array, undefinedBytes: Uint8Array, what: string): void {
  for (let i = 0; i < model.length; i++) {
    if (!undefinedBytes[i] && actual[i] !== model[i]) assert.fail(`${what}: byte ${i} is ${actual[i]}, the model says ${model[i]}`);
  }
}

type Op =
  | { kind: 'write'; at: number; length: number; seed: number; fua: boolean }
  | { kind: 'zeroes'; at: number; length: number; noHole: boolean; fua: boolean }
  | { kind: 'trim'; at: number; length: number }
  | { kind: 'flush' }
  | { kind: 'read'; at: number; length: number };

const range = (max: number) =>
  fc.oneof(
    fc.record({ at: fc.integer({ min: 0, max: SIZE - 1 }), length: fc.integer({ min: 1, max: max }) }),
    // whole blocks and their edges, where the formats' paths differ
    fc.record({ at: fc.integer({ min: 0, max: 11 }).map((b) => b * MIB), length: fc.constantFrom(MIB, 2 * MIB, MIB + 512, 3 * MIB - 1) }),
  ).map((r) => ({ at: r.at, length: Math.min(r.length, SIZE - r.at) }));

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.tuple(range(300_000), fc.integer({ min: 1, max: 1e9 }), fc.boolean()).map(([r, seed, fua]) => ({ kind: 'write' as const, ...r, seed, fua })),
  fc.tuple(range(4 * MIB), fc.boolean(), fc.boolean()).map(([r, noHole, fua]) => ({ kind: 'zeroes' as const, ...r, noHole, fua })),
  range(4 * MIB).map((r) => ({ kind: 'trim' as const, ...r })),
  fc.constant({ kind: 'flush' as const }),
  range(2 * MIB).map((r) => ({ kind: 'read' as const, ...r })),
);

for (const format of ['vhdx', 'vhd'] as const) {
  test(`${format}: random writes, write-zeroes, trims and flushes through NBD leave files that read as the model`, async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 30 }), async (ops) => {
        const paths = restore(pristine[format], join(dir, `${format}-run${run++}`));
        const leaf = paths[3]!;
        const model = await readChain(leaf);
        const undefinedBytes = new Uint8Array(SIZE);
        const served = await serveChain(dir, leaf, { writable: true });
        try {
          const c = await NbdClient.connect(served.socket);
          for (const o of ops) {
            if (o.kind === 'write') {
              const data = randomBytesFrom(o.seed, o.length);
              await c.write(o.at, data, o.fua ? FLAG.FUA : 0);
              model.set(data, o.at);
              undefinedBytes.fill(0, o.at, o.at + o.length);
            } else if (o.kind === 'zeroes') {
              const r = await c.request(CMD.WRITE_ZEROES, o.at, o.length, { flags: (o.noHole ? FLAG.NO_HOLE : 0) | (o.fua ? FLAG.FUA : 0) });
              assert.equal(r.error, 0, r.message);
              model.fill(0, o.at, o.at + o.length);
              undefinedBytes.fill(0, o.at, o.at + o.length);
            } else if (o.kind === 'trim') {
              assert.equal((await c.request(CMD.TRIM, o.at, o.length)).error, 0);
              undefinedBytes.fill(1, o.at, o.at + o.length);
            } else if (o.kind === 'flush') {
              assert.equal((await c.request(CMD.FLUSH, 0, 0)).error, 0);
            } else {
              assertModel(await c.read(o.at, o.length), model.subarray(o.at, o.at + o.length), undefinedBytes.subarray(o.at, o.at + o.length), `read ${o.at}+${o.length}`);
            }
          }
          await c.disconnect();
        } finally {
          await served.close();
        }
        assertModel(await readChain(leaf), model, undefinedBytes, 'the files after the server closed');
        const report = await checkDisk(leaf);
        assert.ok(report.clean, describeFindings(report.findings));
      }),
      { numRuns: 12 },
    );
  });
}

test('write-zeroes on a differencing VHDX: whole blocks over the parent become zero blocks (nothing allocated), the leaf\'s own data is zeroed in place', async () => {
  const base = join(dir, 'zb-base.vhdx');
  const leaf = join(dir, 'zb-leaf.avhdx');
  const b = await createDisk(base, 'vhdx', { diskType: 'dynamic', virtualSize: SIZE, blockSize: MIB });
  await b.write(randomBytesFrom(3, 3 * MIB), 4 * MIB); // blocks 4, 5 and 6 hold data in the parent
  await b.close();
  await (await createChild(leaf, base, { blockSize: MIB })).close();
  const served = await serveChain(dir, leaf, { writable: true });
  let leafSize: number;
  try {
    const c = await NbdClient.connect(served.socket);
    await c.write(7 * MIB, randomBytesFrom(5, MIB)); // block 7 is the leaf's own
    await c.request(CMD.FLUSH, 0, 0);
    leafSize = statSync(leaf).size;
    // Blocks 5 and 7 whole; and 1000 bytes inside block 6, which the leaf does not hold.
    for (const [at, length] of [[5 * MIB, MIB], [7 * MIB, MIB], [6 * MIB + 333, 1000]] as const) {
      assert.equal((await c.request(CMD.WRITE_ZEROES, at, length)).error, 0);
      assert.deepEqual(await c.read(at, length), Buffer.alloc(length));
    }
    await c.request(CMD.FLUSH, 0, 0);
    assert.deepEqual(await served.chain.leaf.map(5 * MIB, MIB), [{ offset: 5 * MIB, length: MIB, state: 'zero' }], 'block 5 is a zero block');
    assert.deepEqual(await served.chain.leaf.map(7 * MIB, MIB), [{ offset: 7 * MIB, length: MIB, state: 'data' }], 'block 7 keeps its allocation');
    assert.notDeepEqual(await c.read(6 * MIB, 333), Buffer.alloc(333), 'the parent still shows around the zeroed bytes');
    await c.disconnect();
  } finally {
    await served.close();
  }
  assert.equal(statSync(leaf).size > leafSize, true, 'the partial block 6 took a block; nothing else grew');
  assert.ok(statSync(leaf).size <= leafSize + 2 * MIB);
  const report = await checkDisk(leaf);
  assert.ok(report.clean, describeFindings(report.findings));
});
