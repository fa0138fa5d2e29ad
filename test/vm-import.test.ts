/**
 * `vm import`: a folder of disks as a lost Hyper-V run leaves them (no vm.json: a base .vhdx per disk
 * and .avhdx layers, a branch left by an apply that saved Now first, file times in the order the
 * checkpoints were taken) becomes a VM whose tree is that run's: every layer but the newest leaf a
 * checkpoint named by its file time, Now in the newest leaf, the branch kept. Each checkpoint reads
 * as the source run's did (diskchain, and pyvhdi for Now's chains); refusals (a missing parent, trees
 * of different shapes) create nothing. A real Windows-made VHD imports as a one-disk VM.
 */
import assert from 'node:assert/strict';
import { copyFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { test } from 'node:test';
import { createVm, importVm, openVm } from '../src/api/vm.js';
import { localDateTime } from '../src/checkpoint/create.js';
import { isDiskchainError } from '../src/io/errors.js';
import { realFixture } from './helpers/fixtures.js';
import { pyvhdiSha256, requireOracle } from './helpers/oracles.js';
import { writeInto } from './helpers/vm-crash.js';
import { sha256 } from './helpers/vhdx-util.js';
import { readWhole } from './helpers/vm-model.js';

const MIB = 1024 * 1024;

test('vm import: a Hyper-V-like folder of .vhdx/.avhdx becomes the same tree, branch kept, Now in the newest leaf', { timeout: 300_000 }, async (t) => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-import-'));
  try {
    // The run: two disks, A, B, then "apply A" saving Now first as S (a branch), then more writes.
    const run = join(work, 'run');
    await createVm(run, { name: 'web', newDisks: [{ size: 4 * MIB }, { size: 2 * MIB }] });
    await writeInto(run, 'disk0', 0, MIB, 1);
    await writeInto(run, 'disk1', 0, 65536, 2);
    let vm = await openVm(run);
    await vm.checkpoint({ name: 'A' });
    await vm.close();
    await writeInto(run, 'disk0', MIB, MIB, 3);
    vm = await openVm(run);
    await vm.checkpoint({ name: 'B' });
    await vm.close();
    await writeInto(run, 'disk1', 65536, 4096, 4);
    vm = await openVm(run);
    await vm.apply('A', { checkpointFirst: 'S' });
    await vm.close();
    await writeInto(run, 'disk0', 3 * MIB, 8192, 5);
    // (libvhdi 20221124 misreads a differencing VHDX layer with no sector bitmap yet: write into each.)
    await writeInto(run, 'disk1', 4096, 4096, 6);
    // What each state reads, by the layer file that holds it.
    vm = await openVm(run, { lock: 'read' });
    const m = vm.manifest;
    const expected = new Map<string, Buffer[]>();
    const stateTime = new Map<string, number>();
    const t0 = Date.UTC(2024, 4, 6, 10, 0, 0);
    for (const [i, name] of ['A', 'B', 'S'].entries()) {
      const c = m.checkpoints.find((x) => x.name === name)!;
      const layer = basename(m.nodes.find((n) => n.id === c.disks.disk0)!.file);
      expected.set(layer, [await readWhole(vm, 'disk0', c.id), await readWhole(vm, 'disk1', c.id)]);
      for (const d of ['disk0', 'disk1']) stateTime.set(m.nodes.find((n) => n.id === c.disks[d])!.file, t0 + i * 3600_000);
    }
    const nowLayer = basename(m.nodes.find((n) => n.id === m.now.disks.disk0)!.file);
    const nowContent = [await readWhole(vm, 'disk0'), await readWhole(vm, 'disk1')];
    for (const d of ['disk0', 'disk1']) stateTime.set(m.nodes.find((n) => n.id === m.now.disks[d])!.file, t0 + 5 * 3600_000);
    await vm.close();
    // The folder a lost run leaves: the disk files only, with the times the checkpoints froze them.
    const lost = join(work, 'lost');
    mkdirSync(lost);
    for (const [file, time] of stateTime) {
      const to = join(lost, basename(file));
      copyFileSync(join(run, file), to);
      utimesSync(to, new Date(time), new Date(time));
    }

    const target = join(work, 'imported');
    const r = await importVm(lost, target, { adopt: 'copy' });
    assert.equal(r.disks.length, 2);
    assert.equal(r.checkpoints.length, 3, 'A, B and the branch S');
    assert.deepEqual(readdirSync(lost).length, stateTime.size, '--copy leaves the folder as it was');
    const got = await openVm(target, { lock: 'read' });
    try {
      const gm = got.manifest;
      const byLayer = (c: { disks: Record<string, string> }): string => basename(gm.nodes.find((n) => n.id === c.disks.disk0)!.file);
      const nameOfLayer = new Map(gm.checkpoints.map((c) => [byLayer(c), c]));
      for (const [layer, content] of expected) {
        const c = nameOfLayer.get(layer);
        assert.ok(c, `a checkpoint for ${layer}`);
        const time = stateTime.get(`Virtual Hard Disks/${layer}`)!;
        assert.equal(c.created, new Date(time).toISOString(), 'created at the file time');
        assert.equal(c.name, `imported (${localDateTime(new Date(time))})`, 'named by the file time');
        for (const [i, d] of ['disk0', 'disk1'].entries()) assert.ok((await readWhole(got, d, c.id)).equals(content[i]!), `${layer} ${d} reads as the run's checkpoint`);
      }
      // The tree: A at the root, B and Now under it, S under B.
      const cp = (layerOf: string) => nameOfLayer.get(layerOf)!;
      const [aLayer, bLayer, sLayer] = [...expected.keys()];
      assert.equal(cp(aLayer!).parent, null);
      assert.equal(cp(bLayer!).parent, cp(aLayer!).id);
      assert.equal(cp(sLayer!).parent, cp(bLayer!).id);
      assert.equal(gm.now.parent, cp(aLayer!).id, 'Now derives from A, as after the apply');
      assert.equal(basename(gm.nodes.find((n) => n.id === gm.now.disks.disk0)!.file), nowLayer, 'Now writes the newest leaf');
      for (const [i, d] of ['disk0', 'disk1'].entries()) assert.ok((await readWhole(got, d)).equals(nowContent[i]!), `Now's ${d}`);
      const check = await got.check();
      assert.deepEqual(check.findings.filter((f) => f.severity !== 'info'), [], 'vm check finds nothing');
      if (requireOracle(t, 'pyvhdi')) {
        for (const [i, d] of ['disk0', 'disk1'].entries()) {
          const files: string[] = [];
          for (let at: string | null = gm.now.disks[d]!; at !== null; ) {
            const n = gm.nodes.find((x) => x.id === at)!;
            files.push(join(target, n.file));
            at = n.parent;
          }
          assert.equal(pyvhdiSha256(files[0]!, files.slice(1)), sha256(nowContent[i]!), `pyvhdi reads Now's ${d} through the imported chain`);
        }
      }
    } finally {
      await got.close();
    }
    // The imported VM works: a checkpoint, then removing the branch merges nothing Now needs.
    const live = await openVm(target);
    await live.checkpoint({ name: 'after import' });
    await live.remove(live.manifest.checkpoints.find((c) => c.parent !== null && live.manifest.checkpoints.every((x) => x.parent !== c.id) && c.name !== 'after import')!.id);
    await live.close();

    // Trees of different shapes: refused, nothing made.
    const odd = join(work, 'odd');
    mkdirSync(odd);
    for (const [file] of stateTime) if (!(file.includes('disk1') && basename(file) !== basename(m.nodes.find((n) => n.disk === 'disk1' && n.parent === null)!.file))) copyFileSync(join(run, file), join(odd, basename(file)));
    await assert.rejects(importVm(odd, join(work, 'no'), { adopt: 'copy' }), (e: unknown) => isDiskchainError(e) && e.code === 'INVALID_ARGUMENT' && /different shapes/.test(e.message));
    assert.equal(existsSync(join(work, 'no', 'vm.json')), false);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('vm import of real files: a Windows-made VHD is a one-disk VM; a differencing VHD without its parent is refused', { timeout: 120_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-import-real-'));
  try {
    const one = join(work, 'one');
    mkdirSync(one);
    copyFileSync(realFixture('win10-dynamic-10M.vhd'), join(one, 'win10-dynamic-10M.vhd'));
    chmodSync(join(one, 'win10-dynamic-10M.vhd'), 0o644);
    const r = await importVm(one, join(work, 'vm1'), { adopt: 'move' });
    assert.equal(r.checkpoints.length, 0);
    assert.deepEqual(readdirSync(one), [], '--move takes the file');
    const vm = await openVm(join(work, 'vm1'), { lock: 'read' });
    assert.equal(sha256(await readWhole(vm, 'disk0')), 'ecff2ef6615a3cddc6a6885f1c6d9cf13a232697e1dc6575f2c2f01f57247784', "the fixture's contentSha256");
    await vm.close();

    const orphan = join(work, 'orphan');
    mkdirSync(orphan);
    copyFileSync(realFixture('fat-differential.vhd'), join(orphan, 'fat-differential.vhd'));
    await assert.rejects(importVm(orphan, join(work, 'vm2'), { adopt: 'copy' }), (e: unknown) => isDiskchainError(e) && e.code === 'PARENT_NOT_FOUND' && /diskchain scan/.test(e.message));
    assert.equal(existsSync(join(work, 'vm2')), false);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
