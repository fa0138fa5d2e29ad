/**
 * kill -9 during `checkpoint export`, at every step boundary (the staging folder made, each progress
 * report of each disk's copy, each disk done, the manifest written, the rename): the source VM is
 * untouched (its tree and contents, nothing in its journal), and the target either does not exist or
 * is a whole VM whose disks read as the checkpoint did. Running the export again then succeeds (a
 * killed export's staging folder is replaced), or is refused because the first one had finished.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { openVm } from '../src/api/vm.js';
import { dc, makeTemplate, signature } from './helpers/vm-crash.js';
import { readWhole } from './helpers/vm-model.js';

test('kill -9 at every boundary of checkpoint export: no target, or a whole one; the source untouched', { timeout: 600_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-export-crash-'));
  try {
    const source = join(work, 'vm');
    await makeTemplate(source);
    const sig = await signature(source);
    const vm = await openVm(source, { lock: 'none' });
    const b = vm.manifest.checkpoints.find((c) => c.name === 'B')!;
    const expected = [await readWhole(vm, 'disk0', b.id), await readWhole(vm, 'disk1', b.id)];
    await vm.close();
    const target = join(work, 'out');
    const assertWhole = async (where: string): Promise<void> => {
      const out = await openVm(target, { lock: 'read' });
      try {
        assert.equal(out.manifest.checkpoints.length, 0);
        for (const [i, d] of ['disk0', 'disk1'].entries()) assert.ok((await readWhole(out, d)).equals(expected[i]!), `${where}: exported ${d}`);
      } finally {
        await out.close();
      }
    };
    const labels = new Set<string>();
    let points = 0;
    for (let n = 1; ; n++) {
      rmSync(target, { recursive: true, force: true });
      rmSync(`${target}.diskchain-partial`, { recursive: true, force: true });
      const log = join(work, 'points.log');
      rmSync(log, { force: true });
      const r = dc(['checkpoint', 'export', source, 'B', target], { DISKCHAIN_TEST_CRASH_AFTER: String(n), DISKCHAIN_TEST_POINTS: log });
      if (r.signal !== 'SIGKILL') {
        assert.equal(r.status, 0, r.stderr);
        await assertWhole('without a kill');
        break;
      }
      points++;
      const lines = existsSync(log) ? readFileSync(log, 'utf8').trim().split('\n') : [];
      if (lines.length > 0) labels.add(lines[lines.length - 1]!.split(' ')[1]!);
      assert.equal(await signature(source), sig, `boundary ${n}: the source VM changed`);
      assert.deepEqual(readdirSync(join(source, 'journal')), [], `boundary ${n}: the source has records`);
      if (existsSync(join(target, 'vm.json'))) {
        await assertWhole(`killed at boundary ${n}`);
        assert.equal(dc(['checkpoint', 'export', source, 'B', target]).status, 6, 'a finished export is not made twice (EXISTS)');
      } else {
        assert.equal(existsSync(target), false, `boundary ${n}: a target folder without vm.json`);
        const again = dc(['checkpoint', 'export', source, 'B', target]);
        assert.equal(again.status, 0, `boundary ${n}, run again: ${again.stderr}`);
        await assertWhole(`boundary ${n}, run again`);
      }
      assert.equal(existsSync(`${target}.diskchain-partial`), false, `boundary ${n}: the staging folder is left after the export ran again`);
    }
    for (const l of ['export:staged', 'export:copy', 'export:disk:0', 'export:disk:1', 'export:manifest', 'export:committed']) assert.ok(labels.has(l), `never killed at ${l} (${[...labels].join(', ')})`);
    assert.ok(points >= 6, `only ${points} boundaries`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
