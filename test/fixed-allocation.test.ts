import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createDisk } from '../src/api/create.js';
import { DiskchainError } from '../src/io/errors.js';
import { qemuImg, requireOracle } from './helpers/oracles.js';

// Issue 10: `--type fixed` made a sparse file; a fixed disk is fully allocated, as Hyper-V makes it.

const dir = mkdtempSync(join(tmpdir(), 'diskchain-fixed-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const SIZE = 24 * 1024 * 1024;

for (const format of ['vhdx', 'vhd'] as const) {
  test(`${format}: a fixed disk's data area is allocated in full, progress reaches its length, and readers agree on the size`, async (t) => {
    const path = join(dir, `fixed.${format}`);
    const seen: Array<[number, number]> = [];
    const disk = await createDisk(path, format, { diskType: 'fixed', virtualSize: SIZE, blockSize: 1024 * 1024, onProgress: (done, total) => seen.push([done, total]) });
    await disk.close();
    const st = statSync(path);
    // Allocated bytes (st_blocks counts 512-byte units) cover the whole virtual size, not only metadata.
    assert.ok(st.blocks * 512 >= SIZE, `allocated ${st.blocks * 512} bytes for a ${SIZE}-byte fixed disk`);
    assert.ok(seen.length > 1, 'progress was reported more than once');
    const last = seen[seen.length - 1]!;
    assert.equal(last[0], last[1]);
    assert.ok(last[1] >= SIZE);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]![0] > seen[i - 1]![0], 'progress only moves forward');
    if (requireOracle(t, 'qemu-img')) {
      const info = JSON.parse(qemuImg(['info', '--output=json', '-f', format === 'vhd' ? 'vpc' : 'vhdx', path])) as { 'virtual-size': number };
      assert.equal(info['virtual-size'], SIZE);
      if (format === 'vhdx') qemuImg(['check', '-f', 'vhdx', path]); // qemu's vpc driver has no check
    }
  });

  test(`${format}: a fixed create cancelled while it allocates leaves no file`, async () => {
    const path = join(dir, `cancelled.${format}`);
    const controller = new AbortController();
    await assert.rejects(
      createDisk(path, format, {
        diskType: 'fixed',
        virtualSize: SIZE,
        blockSize: 1024 * 1024,
        signal: controller.signal,
        onProgress: (done) => {
          if (done >= 8 * 1024 * 1024) controller.abort();
        },
      }),
      (e: unknown) => e instanceof DiskchainError && e.code === 'ABORTED',
    );
    assert.equal(existsSync(path), false);
    assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('cancelled')), []);
  });
}
