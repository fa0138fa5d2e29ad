/**
 * The space forecast on a real small file system (a tmpfs mounted for the test; needs root, as CI
 * runs): a merge that cannot fit is refused before anything changes, with both numbers; `measure`
 * says the same. And a cancelled merge (AbortSignal) stops cleanly and resumes.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { openChain } from '../src/chain/open-chain.js';
import { isDiskchainError } from '../src/io/errors.js';
import { measureChain } from '../src/ops/measure.js';
import { merge } from '../src/ops/merge.js';
import { buildChain, chainHash } from './helpers/merge-chain.js';
import { MIB, fileSha256, tempDir } from './helpers/vhdx-util.js';

function mountSmall(t: TestContext, dir: string, bytes: number): boolean {
  mkdirSync(dir, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
  if (r.status === 0) return true;
  // Not an oracle: a machine that cannot mount (no root, a container) skips, loudly.
  const msg = `cannot mount a small tmpfs (${r.stderr?.toString().trim()}); the forecast test needs root`;
  console.error(`SKIPPED LOUDLY: ${msg}`);
  t.skip(msg);
  return false;
}

for (const format of ['vhdx', 'vhd'] as const) {
  test(`${format}: a merge that cannot fit is refused early with both numbers, and changes nothing`, async (t) => {
    const { dir, cleanup } = tempDir();
    const small = join(dir, 'small');
    try {
      const files = await buildChain(join(dir, 'src'), format, 21);
      const sizes = files.map((f) => spawnSync('stat', ['-c', '%s', f]).stdout.toString().trim());
      if (!mountSmall(t, small, 256 * MIB)) return;
      try {
        const copies = files.map((f) => {
          const to = join(small, f.slice(f.lastIndexOf('/') + 1));
          copyFileSync(f, to);
          return to;
        });
        const chain = await openChain(copies[3]!);
        const m = await measureChain(chain);
        await chain.close();
        assert.ok(m.mergeIntoBase && m.mergeIntoBase.bytesNeeded > 0, `sizes ${sizes.join(',')}`);
        // Fill the file system until the merge into the base no longer fits.
        const filler = join(small, 'filler');
        assert.ok(m.mergeIntoBase.bytesNeeded > 2 * MIB && m.mergeIntoBase.fits);
        const fill = m.mergeIntoBase.freeBytes - (m.mergeIntoBase.bytesNeeded - MIB);
        assert.equal(spawnSync('fallocate', ['-l', String(fill), filler]).status, 0);
        const again = await openChain(copies[3]!);
        const m2 = await measureChain(again);
        await again.close();
        assert.equal(m2.mergeIntoBase!.fits, false, `measure says it does not fit: ${JSON.stringify(m2.mergeIntoBase)}`);
        const before = copies.map(fileSha256);
        await assert.rejects(merge(copies[3]!, { into: copies[0]! }), (e: unknown) => {
          assert.ok(isDiskchainError(e));
          assert.equal(e.code, 'NO_SPACE');
          assert.match(e.message, /needs \d+ bytes .* which has \d+ free/);
          return true;
        });
        assert.deepEqual(copies.map(fileSha256), before, 'nothing changed');
        assert.equal(readdirSync(small).filter((n) => n.includes('diskchain')).length, 0, 'no journal left');
      } finally {
        spawnSync('umount', [small]);
      }
    } finally {
      cleanup();
    }
  });

  test(`${format}: a cancelled merge stops cleanly, the leaf is unchanged, and the same merge resumes`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const [base, , , c3] = await buildChain(join(dir, 'w'), format, 22);
      const expected = await chainHash(c3!);
      const controller = new AbortController();
      let seen = 0;
      await assert.rejects(
        merge(c3!, { into: base!, checkpointBytes: MIB, signal: controller.signal, onProgress: () => ++seen === 2 && controller.abort() }),
        (e: unknown) => isDiskchainError(e) && e.code === 'ABORTED',
      );
      assert.equal(await chainHash(c3!), expected);
      const r = await merge(c3!, { into: base! });
      assert.equal(r.resumed, true);
      assert.equal(await chainHash(base!), expected);
    } finally {
      cleanup();
    }
  });
}
