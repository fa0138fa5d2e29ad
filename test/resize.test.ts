/**
 * Resize-VHD (`diskchain resize`, `vm resize-disk`): grow VHDX (BAT in place, and moved when its
 * region is too small) and VHD (dynamic with its BAT moved, fixed), shrink VHDX when nothing lies
 * beyond the new end, on our disks and on real Windows- and QEMU-made files. Each result is read by
 * qemu-img (info, check, compare against the original: the old content and zeros after it) and
 * pyvhdi; refusals (differencing, children, a VM with checkpoints, data beyond a shrink, VHD shrink)
 * leave the file byte for byte as it was.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createChild, createDisk, openDisk, resize } from '../src/api/index.js';
import { createVm, openVm } from '../src/api/vm.js';
import { isDiskchainError } from '../src/io/errors.js';
import { realFixture } from './helpers/fixtures.js';
import { qemuImg, requireOracle } from './helpers/oracles.js';
import { fileSha256, MIB, Rng } from './helpers/vhdx-util.js';
import { CLI as MAIN } from './helpers/cli.js';

const GIB = 1024 * MIB;

function dc(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `length` bytes at `offset` as pyvhdi (libvhdi) reads them. */
function pyvhdiRead(path: string, offset: number, length: number): Buffer {
  const script = 'import sys, pyvhdi\nf = pyvhdi.file(); f.open(sys.argv[1])\nf.seek_offset(int(sys.argv[2]), 0)\nsys.stdout.buffer.write(f.read_buffer(int(sys.argv[3])))\n';
  return execFileSync('/usr/bin/python3', ['-c', script, path, String(offset), String(length)], { maxBuffer: 256 * MIB });
}

function pyvhdiSize(path: string): number {
  const script = 'import sys, pyvhdi\nf = pyvhdi.file(); f.open(sys.argv[1])\nprint(f.get_media_size())\n';
  return Number(execFileSync('/usr/bin/python3', ['-c', script, path], { encoding: 'utf8' }).trim());
}

/** A writable copy (the vendored fixtures are read-only). */
function copyWritable(from: string, to: string): void {
  copyFileSync(from, to);
  chmodSync(to, 0o644);
}

// No size option: the geometry resize writes makes qemu read Current Size (docs/formats/vhd.md).
const vpc = (path: string): string => `driver=vpc,file.filename=${path}`;

function qemuSize(path: string, format: 'vhdx' | 'vhd'): number {
  const info = JSON.parse(format === 'vhdx' ? qemuImg(['info', '--output=json', '-f', 'vhdx', path]) : qemuImg(['info', '--output=json', '--image-opts', vpc(path)])) as { 'virtual-size': number };
  return info['virtual-size'];
}

/** qemu-img compare: `grown` reads as `original` and zeros after its end (exit 0), for either format. */
function qemuSameThenZeros(grown: string, original: string, format: 'vhdx' | 'vhd'): void {
  const args = format === 'vhdx' ? ['compare', '-f', 'vhdx', '-F', 'vhdx', grown, original] : ['compare', '--image-opts', vpc(grown), vpc(original)];
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `qemu-img compare ${grown} ${original}: ${r.stdout}${r.stderr}`);
}

async function refusedUnchanged(path: string, size: number, code: string, match: RegExp): Promise<void> {
  const before = fileSha256(path);
  await assert.rejects(resize(path, size), (e: unknown) => {
    assert.ok(isDiskchainError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, match);
    return true;
  });
  assert.equal(fileSha256(path), before, `${path}: a refused resize changed the file`);
}

test('resize VHDX: grow in place and with the BAT moved, shrink when nothing lies beyond; qemu-img and pyvhdi agree', { timeout: 300_000 }, async (t) => {
  if (!requireOracle(t, 'qemu-img') || !requireOracle(t, 'pyvhdi')) return;
  const work = mkdtempSync(join(tmpdir(), 'dc-resize-'));
  try {
    // Ours: 1 MiB blocks so that 200 GiB needs a BAT larger than the 1 MiB region it has.
    const path = join(work, 'a.vhdx');
    const disk = await createDisk(path, 'vhdx', { diskType: 'dynamic', virtualSize: 64 * MIB, blockSize: MIB });
    const data = new Rng(7).fill(new Uint8Array(3 * MIB));
    await disk.write(data, 5 * MIB);
    await disk.write(data.subarray(0, 4096), 64 * MIB - 4096);
    await disk.close();
    const original = join(work, 'a-original.vhdx');
    copyFileSync(path, original);

    await resize(path, 1 * GIB);
    assert.equal(qemuSize(path, 'vhdx'), GIB);
    qemuImg(['check', '-f', 'vhdx', path]);
    qemuSameThenZeros(path, original, 'vhdx');
    assert.ok(pyvhdiRead(path, 5 * MIB, 3 * MIB).equals(data));

    await resize(path, 200 * GIB); // the BAT moves
    assert.equal(qemuSize(path, 'vhdx'), 200 * GIB);
    assert.equal(pyvhdiSize(path), 200 * GIB);
    qemuImg(['check', '-f', 'vhdx', path]);
    qemuSameThenZeros(path, original, 'vhdx');
    // Writes beyond the old end land and read back through both readers.
    const far = new Rng(8).fill(new Uint8Array(MIB));
    const d2 = await openDisk(path, { writable: true });
    await d2.write(far, 199 * GIB);
    await d2.close();
    assert.ok(pyvhdiRead(path, 199 * GIB, MIB).equals(far), 'pyvhdi reads the write past the old end');
    assert.ok(pyvhdiRead(path, 5 * MIB, 3 * MIB).equals(data), 'pyvhdi reads the old data after the BAT moved');
    qemuImg(['check', '-f', 'vhdx', path]);

    // Shrink: refused while data lies beyond the new end (it names the smallest size), then allowed.
    await refusedUnchanged(path, 100 * GIB, 'INVALID_ARGUMENT', /smallest size now is 213675671552/);
    const d3 = await openDisk(path, { writable: true });
    assert.equal(d3.virtualSize, 200 * GIB);
    await d3.close();
    // Make room by hand: a fresh copy of the 64 MiB original grown and shrunk back.
    const b = join(work, 'b.vhdx');
    copyFileSync(original, b);
    await resize(b, 10 * GIB);
    await resize(b, 64 * MIB);
    qemuImg(['check', '-f', 'vhdx', b]);
    const r = spawnSync('qemu-img', ['compare', '-s', '-f', 'vhdx', '-F', 'vhdx', b, original], { encoding: 'utf8' });
    assert.equal(r.status, 0, `grown and shrunk back reads as the original: ${r.stdout}${r.stderr}`);
    await refusedUnchanged(b, 63 * MIB, 'INVALID_ARGUMENT', /smallest size now is 67108864/);
    // A disk whose data ends at 8 MiB shrinks to a size that is not block aligned, cutting nothing.
    const c = join(work, 'c.vhdx');
    const dc3 = await createDisk(c, 'vhdx', { diskType: 'dynamic', virtualSize: 64 * MIB, blockSize: MIB });
    await dc3.write(data, 5 * MIB);
    await dc3.close();
    await resize(c, 8 * MIB + 512);
    assert.equal(qemuSize(c, 'vhdx'), 8 * MIB + 512);
    assert.equal(pyvhdiSize(c), 8 * MIB + 512);
    assert.ok(pyvhdiRead(c, 5 * MIB, 3 * MIB).equals(data));
    qemuImg(['check', '-f', 'vhdx', c]);

    // A real Windows-made VHDX with a log to replay: grown (the open replays it first).
    const win = join(work, 'win.vhdx');
    const winOriginal = join(work, 'win-original.vhdx');
    copyWritable(realFixture('win10-1703-dynamic-1G-dirtylog.vhdx'), win);
    copyFileSync(win, winOriginal);
    qemuImg(['check', '-r', 'all', '-f', 'vhdx', winOriginal]); // qemu's replay, for the comparison
    await resize(win, 3 * GIB);
    assert.equal(qemuSize(win, 'vhdx'), 3 * GIB);
    qemuImg(['check', '-f', 'vhdx', win]);
    qemuSameThenZeros(win, winOriginal, 'vhdx');
    // And QEMU's own: 10 GiB in 1 MiB blocks grown to 300 GiB moves its BAT.
    const q = join(work, 'q.vhdx');
    const qOriginal = join(work, 'q-original.vhdx');
    copyWritable(realFixture('iotest-dirtylog-10G-4M.vhdx'), q);
    copyFileSync(q, qOriginal);
    qemuImg(['check', '-r', 'all', '-f', 'vhdx', qOriginal]);
    await resize(q, 300 * GIB);
    assert.equal(qemuSize(q, 'vhdx'), 300 * GIB);
    qemuImg(['check', '-f', 'vhdx', q]);
    qemuSameThenZeros(q, qOriginal, 'vhdx');
    assert.ok(pyvhdiRead(q, 0, 18 * MIB).equals(Buffer.alloc(18 * MIB, 0xa5)), 'pyvhdi reads QEMU iotest 070 pattern after the move');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('resize VHD: dynamic (BAT moved) and fixed grow, ours and Windows-made; shrink refused', { timeout: 300_000 }, async (t) => {
  if (!requireOracle(t, 'qemu-img') || !requireOracle(t, 'pyvhdi')) return;
  const work = mkdtempSync(join(tmpdir(), 'dc-resize-vhd-'));
  try {
    const cases: Array<[string, string | { type: 'dynamic' | 'fixed'; size: number }, number]> = [
      ['ours-dynamic.vhd', { type: 'dynamic', size: 6 * MIB }, 40 * MIB],
      ['ours-fixed.vhd', { type: 'fixed', size: 6 * MIB }, 9 * MIB + 512],
      ['win-dynamic.vhd', 'win10-dynamic-10M.vhd', 100 * MIB],
      ['win-fixed.vhd', 'win10-fixed-10M.vhd', 12 * MIB],
      ['qemu-dynamic.vhd', 'qemu-ext2-4M.vhd', 64 * MIB],
    ];
    for (const [name, from, size] of cases) {
      const path = join(work, name);
      const original = join(work, `orig-${name}`);
      if (typeof from === 'string') copyWritable(realFixture(from), path);
      else {
        const d = await createDisk(path, 'vhd', { diskType: from.type, virtualSize: from.size });
        await d.write(new Rng(3).fill(new Uint8Array(MIB)), 2 * MIB);
        await d.write(new Rng(4).fill(new Uint8Array(4096)), from.size - 4096);
        await d.close();
      }
      copyFileSync(path, original);
      const before = pyvhdiRead(original, 0, pyvhdiSize(original));
      await refusedUnchanged(path, 1 * MIB, 'UNSUPPORTED', /cannot shrink/);
      await resize(path, size);
      assert.equal(qemuSize(path, 'vhd'), size, name);
      assert.equal(pyvhdiSize(path), size, name);
      qemuSameThenZeros(path, original, 'vhd');
      const after = pyvhdiRead(path, 0, size);
      assert.ok(after.subarray(0, before.length).equals(before), `${name}: pyvhdi reads the old content`);
      assert.ok(after.subarray(before.length).every((b) => b === 0), `${name}: pyvhdi reads zeros after it`);
      // The grown disk takes writes at its new end (a dynamic one allocates after the moved BAT).
      const tail = new Rng(5).fill(new Uint8Array(4096));
      const d = await openDisk(path, { writable: true });
      await d.write(tail, size - 4096);
      await d.close();
      assert.ok(pyvhdiRead(path, size - 4096, 4096).equals(tail), `${name}: a write at the new end`);
      assert.ok(pyvhdiRead(path, 0, before.length).equals(before), `${name}: old content after the write`);
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('resize refusals: differencing, children, a VM with checkpoints (with the way out); vm resize-disk on a VM without', { timeout: 300_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'dc-resize-guard-'));
  try {
    const base = join(work, 'base.vhdx');
    await (await createDisk(base, 'vhdx', { diskType: 'dynamic', virtualSize: 8 * MIB })).close();
    const child = join(work, 'child.avhdx');
    await (await createChild(child, base)).close();
    await refusedUnchanged(child, 16 * MIB, 'UNSUPPORTED', /differencing disk.*merge/);
    await refusedUnchanged(base, 16 * MIB, 'HAS_DEPENDENTS', /child\.avhdx.*must keep its size/);
    const cli = dc(['resize', base, '--size', '16M', '--json']);
    assert.equal(cli.status, 4, `exit code of HAS_DEPENDENTS: ${cli.stderr}`);
    assert.equal(JSON.parse(cli.stdout).error.code, 'HAS_DEPENDENTS');

    // A VM: its disk with a checkpoint is refused both ways, with the way out named.
    const folder = join(work, 'vm');
    await createVm(folder, { newDisks: [{ size: 8 * MIB }, { size: 4 * MIB, format: 'vhd' }] });
    const vm = await openVm(folder);
    const cp = await vm.checkpoint({ name: 'before' });
    const baseFile = join(folder, cp.disks[0]!.file);
    await vm.close();
    const refused = dc(['vm', 'resize-disk', folder, 'disk0', '--size', '16M']);
    assert.equal(refused.status, 4, refused.stderr);
    assert.match(refused.stderr, /checkpoint remove .*--subtree.*export/);
    await refusedUnchanged(baseFile, 16 * MIB, 'HAS_DEPENDENTS', /checkpoint remove/);
    // Without checkpoints: the VM's disks grow under its lock; the next checkpoint has the new size.
    const again = await openVm(folder);
    await again.remove('before');
    await again.close();
    const ok = dc(['vm', 'resize-disk', folder, 'disk0', '--size', '16M', '--json']);
    assert.equal(ok.status, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).size, 16 * MIB);
    assert.equal(dc(['resize', join(folder, 'Virtual Hard Disks', 'disk1.vhd'), '--size', '6M']).status, 0, 'a VM disk by its file: through the VM');
    const after = await openVm(folder);
    try {
      const c = await after.checkpoint({ name: 'grown' });
      for (const [i, size] of [16 * MIB, 6 * MIB].entries()) {
        const chain = await after.openDisk(`disk${i}`, { checkpoint: c.id });
        assert.equal(chain.virtualSize, size);
        await chain.close();
      }
    } finally {
      await after.close();
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
