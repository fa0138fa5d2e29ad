import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import fc from 'fast-check';
import { convert, partialPath } from '../src/api/convert.js';
import { openDisk } from '../src/chain/open-disk.js';
import type { FormatName } from '../src/formats/types.js';
import { isDiskchainError } from '../src/io/errors.js';
import { qemuImg, requireOracle } from './helpers/oracles.js';
import { fileSha256, MIB, randomBytesFrom, readAll, sha256, tempDir } from './helpers/vhdx-util.js';
import { CLI } from './helpers/cli.js';

const { dir, cleanup } = tempDir('diskchain-convert-');
after(cleanup);

const GRANULE = 64 * 1024;
const QEMU_FORMAT: Record<FormatName, string> = { vhdx: 'vhdx', vhd: 'vpc', raw: 'raw' };

/** Bytes in 64 KiB pieces holding a non-zero byte: what a convert must write, no more. */
function nonZeroBytes(data: Uint8Array): number {
  let n = 0;
  for (let at = 0; at < data.length; at += GRANULE) {
    const piece = data.subarray(at, Math.min(at + GRANULE, data.length));
    if (piece.some((b) => b !== 0)) n += piece.length;
  }
  return n;
}

const target = fc.record({
  format: fc.constantFrom<FormatName>('vhdx', 'vhd', 'raw'),
  diskType: fc.constantFrom('dynamic' as const, 'fixed' as const),
  blockSize: fc.constantFrom(undefined, 1 * MIB, 2 * MIB, 8 * MIB),
});
/** A source image: random data with zero runs of any length at any sector. */
const source = fc.record({
  sectors: fc.integer({ min: 1, max: 12 * 2048 }),
  zeroRuns: fc.array(fc.record({ at: fc.double({ min: 0, max: 1, noNaN: true }), sectors: fc.integer({ min: 1, max: 2048 }) }), { maxLength: 12 }),
  allZero: fc.boolean(),
  seed: fc.integer({ min: 1, max: 1e9 }),
});

test('convert writes every non-zero 64 KiB and nothing else, to every format and type; the result reads the same here and in qemu-img', async (t) => {
  const withQemu = requireOracle(t, 'qemu-img');
  let run = 0;
  await fc.assert(
    fc.asyncProperty(source, target, async (s, tg) => {
      const size = s.sectors * 512;
      const data = s.allZero ? new Uint8Array(size) : randomBytesFrom(s.seed, size);
      for (const z of s.zeroRuns) {
        const first = Math.floor(z.at * s.sectors);
        data.fill(0, first * 512, Math.min(s.sectors, first + z.sectors) * 512);
      }
      const src = join(dir, `source${run}.raw`);
      const out = join(dir, `target${run++}.${tg.format}`);
      writeFileSync(src, data);
      try {
        const result = await convert(src, out, { format: tg.format, diskType: tg.diskType, sourceFormat: 'raw', ...(tg.blockSize && tg.format !== 'raw' ? { blockSize: tg.blockSize } : {}) });
        assert.equal(result.bytesWritten, nonZeroBytes(data));
        assert.equal(result.bytesSkipped, size - result.bytesWritten);
        assert.equal(existsSync(partialPath(out)), false);
        const disk = await openDisk(out, tg.format === 'raw' ? { format: 'raw' } : {});
        try {
          assert.equal(disk.virtualSize, size);
          assert.equal(sha256(await readAll(disk)), sha256(data));
          if (tg.diskType === 'dynamic' && tg.format !== 'raw') {
            // A block that got no write stays unallocated.
            const blocks = new Set<number>();
            for (let at = 0; at < size; at += GRANULE) {
              if (data.subarray(at, Math.min(at + GRANULE, size)).some((b) => b !== 0)) blocks.add(Math.floor(at / disk.blockSize));
            }
            assert.ok((await disk.allocatedBytes()) <= blocks.size * disk.blockSize);
          }
        } finally {
          await disk.close();
        }
        // No size option for VHD: diskchain's geometry makes qemu read Current Size (docs/formats/vhd.md).
        const qemuTarget = `driver=${QEMU_FORMAT[tg.format]},file.filename=${out}`;
        if (withQemu) qemuImg(['compare', '-q', '--image-opts', `driver=raw,file.filename=${src}`, qemuTarget]);
      } finally {
        rmSync(src, { force: true });
        rmSync(out, { force: true });
      }
    }),
    { numRuns: 30, seed: 20261122 },
  );
});

test('convert refuses an existing target and leaves it unchanged', async () => {
  const src = join(dir, 'r.raw');
  writeFileSync(src, randomBytesFrom(3, MIB));
  const out = join(dir, 'exists.vhdx');
  writeFileSync(out, 'not to be touched');
  await assert.rejects(convert(src, out, { format: 'vhdx', sourceFormat: 'raw' }), (e: unknown) => isDiskchainError(e) && e.code === 'IO' && e.details.errno === 'EEXIST');
  assert.equal(readFileSync(out, 'utf8'), 'not to be touched');
  assert.equal(existsSync(partialPath(out)), false);
  const r = spawnSync('node', [CLI, 'convert', src, out, '-f', 'raw', '-O', 'vhdx']);
  assert.equal(r.status, 5);
  assert.equal(readFileSync(out, 'utf8'), 'not to be touched');
});

/** Spawns a convert and kills it `delay` ms after its partial file appears (or `delay` ms after spawn when `fromSpawn`). */
async function killedConvert(args: string[], partial: string, delay: number, fromSpawn: boolean): Promise<{ code: number | null; partialSeen: boolean }> {
  const child = spawn('node', [CLI, ...args], { stdio: 'ignore' });
  let exited = false;
  const exit = new Promise<number | null>((res) => child.on('exit', (c) => ((exited = true), res(c))));
  let partialSeen = false;
  if (!fromSpawn) {
    while (!exited && !existsSync(partial)) await new Promise((r) => setTimeout(r, 1));
    partialSeen = existsSync(partial);
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), delay);
  const code = await exit;
  clearTimeout(timer);
  return { code, partialSeen };
}

test('a convert killed (SIGKILL) at any moment leaves no file under the target name, or a complete one; the next run finishes', async () => {
  const size = 96 * MIB;
  const src = join(dir, 'k.raw');
  writeFileSync(src, randomBytesFrom(11, size));
  const want = fileSha256(src);
  let killedMidway = 0;
  const moments: Array<[number, boolean]> = [[5, true], [0, false], [1, false], [3, false], [6, false], [10, false], [20, false], [35, false], [60, false], [100, false]];
  for (const [i, [ms, fromSpawn]] of moments.entries()) {
    for (const format of ['vhdx', 'vhd'] as const) {
      const out = join(dir, `k${i}.${format}`);
      const { code, partialSeen } = await killedConvert([ 'convert', src, out, '-f', 'raw', '-O', format], partialPath(out), ms, fromSpawn);
      const what = `${format}, killed ${ms} ms after ${fromSpawn ? 'spawn' : 'the partial file appeared'}`;
      if (existsSync(out)) {
        const disk = await openDisk(out);
        assert.equal(sha256(await readAll(disk)), want, `${what}: a target under its name is complete`);
        await disk.close();
      } else {
        assert.equal(code, null, `${what}: only a killed convert leaves no target`);
        if (partialSeen) killedMidway++;
        const again = spawnSync('node', [CLI, 'convert', src, out, '-f', 'raw', '-O', format]);
        assert.equal(again.status, 0, again.stderr.toString());
        assert.equal(existsSync(partialPath(out)), false, `${what}: the next run leaves no partial file`);
        const disk = await openDisk(out);
        assert.equal(sha256(await readAll(disk)), want);
        await disk.close();
      }
      rmSync(out, { force: true });
    }
  }
  assert.ok(killedMidway >= 6, `at least 6 kills landed while the partial file was being written (got ${killedMidway})`);
});
