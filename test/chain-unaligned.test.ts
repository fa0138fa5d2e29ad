/**
 * DiskChain.read and .map on ranges that do not start or end on a sector (NBD clients may ask for any
 * byte range): the bytes are those of the aligned read, and the map covers exactly the range with the
 * states of the aligned map. A VHD layer once mapped a partial sector as two.
 */
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { openChain } from '../src/chain/open-chain.js';
import { buildChain } from './helpers/merge-chain.js';
import { assertBytesEqual, MIB, tempDir } from './helpers/vhdx-util.js';

const SIZE = 8 * MIB;
let dir: string;
let cleanup: () => void;
before(() => {
  ({ dir, cleanup } = tempDir('diskchain-unaligned-'));
});
after(() => cleanup?.());

for (const format of ['vhdx', 'vhd'] as const) {
  test(`${format}: unaligned reads and maps agree with the aligned ones`, async () => {
    const leaf = (await buildChain(join(dir, format), format, 31, SIZE))[3]!;
    const chain = await openChain(leaf);
    const whole = new Uint8Array(SIZE);
    await chain.read(whole, 0);
    const states = new Array<string>(SIZE / 512);
    for (const e of await chain.mapAll()) for (let s = e.offset / 512; s < (e.offset + e.length) / 512; s++) states[s] = e.state;
    try {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 0, max: 600_000 }), async (offset, n) => {
          const length = Math.min(n, SIZE - offset);
          const got = new Uint8Array(length);
          await chain.read(got, offset);
          assertBytesEqual(got, whole.subarray(offset, offset + length), `read ${offset}+${length}`);
          let at = offset;
          for (const e of await chain.map(offset, length)) {
            assert.equal(e.offset, at, 'extents follow each other');
            assert.ok(e.length > 0);
            for (let b = e.offset; b < e.offset + e.length; b += 512 - (b % 512)) assert.equal(e.state, states[Math.floor(b / 512)], `state at ${b}`);
            at += e.length;
          }
          assert.equal(at, offset + length, 'the map covers the range exactly');
        }),
        { numRuns: 200 },
      );
    } finally {
      await chain.close();
    }
  });
}
