import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { convert, partialPath } from '../src/api/convert.js';
import { isDiskchainError } from '../src/io/errors.js';
import { qemuImg, requireOracle } from './helpers/oracles.js';
import { realFixture } from './helpers/fixtures.js';
import { CLI } from './helpers/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'diskchain-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function dc(args: string[], input?: Uint8Array): { status: number; stdout: string; stderr: string; raw: Buffer } {
  const r = spawnSync('node', [CLI, ...args], { cwd: dir, input, maxBuffer: 256 * 1024 * 1024 });
  return { status: r.status ?? -1, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), raw: r.stdout };
}

const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

test('create, write, checkpoint, info --json, check and read agree with what was written', () => {
  assert.equal(dc(['create', 'base.vhdx', '--size', '40M', '--block-size', '1M']).status, 0);
  const data = randomBytes(3 * 1024 * 1024 + 512);
  writeFileSync(join(dir, 'data.bin'), data);
  assert.equal(dc(['write', 'base.vhdx', '--offset', '1536', '--input', 'data.bin']).status, 0);
  assert.equal(dc(['create', 'snap.avhdx', '--parent', 'base.vhdx']).status, 0);
  const patch = Buffer.from('written in the checkpoint, unaligned');
  assert.equal(dc(['write', 'snap.avhdx', '--offset', '1000001'], patch).status, 0);

  const info = JSON.parse(dc(['info', 'snap.avhdx', '--json']).stdout);
  assert.equal(info.format, 'vhdx');
  assert.equal(info.diskType, 'differencing');
  assert.equal(info.virtualSize, 40 * 1024 * 1024);
  assert.equal(info.parent.found, join(dir, 'base.vhdx'));
  assert.equal(info.parent.identityMatches, true);
  const baseInfo = JSON.parse(dc(['info', 'base.vhdx', '--json']).stdout);
  assert.equal(info.parent.expected.dataWriteGuid, baseInfo.identity.dataWriteGuid);

  const check = dc(['check', 'snap.avhdx', '--json']);
  assert.equal(check.status, 0, check.stdout);
  assert.equal(JSON.parse(check.stdout).clean, true);

  const expected = Buffer.alloc(40 * 1024 * 1024);
  expected.set(data, 1536);
  expected.set(patch, 1000001);
  const read = dc(['read', 'snap.avhdx']);
  assert.equal(read.status, 0);
  assert.ok(read.raw.equals(expected), 'read through the chain differs from what was written');
  const slice = dc(['read', 'snap.avhdx', '--offset', '1000001', '--length', String(patch.length)]);
  assert.equal(slice.raw.toString(), patch.toString());
});

test('commands that only read leave every file byte-for-byte unchanged', () => {
  const before = [sha(join(dir, 'base.vhdx')), sha(join(dir, 'snap.avhdx'))];
  for (const args of [['info', 'snap.avhdx'], ['check', 'snap.avhdx'], ['read', 'snap.avhdx', '--length', '4096'], ['info', 'base.vhdx', '--json']]) {
    assert.equal(dc(args).status, 0, args.join(' '));
  }
  assert.deepEqual([sha(join(dir, 'base.vhdx')), sha(join(dir, 'snap.avhdx'))], before);
});

test('a dirty-log fixture: info and check do not touch it; convert replays in memory', (t) => {
  const copy = join(dir, 'dirty.vhdx');
  copyFileSync(realFixture('win10-1703-dynamic-1G-dirtylog.vhdx'), copy);
  const before = sha(copy);
  const info = JSON.parse(dc(['info', copy, '--json']).stdout);
  assert.match(String(info.details.logReplayedIn), /memory/);
  const check = dc(['check', copy, '--json']);
  assert.ok(JSON.parse(check.stdout).findings.some((f: { code: string }) => f.code === 'LOG_DIRTY'));
  assert.equal(dc(['convert', copy, 'replayed.raw', '-O', 'raw']).status, 0);
  assert.equal(sha(copy), before, 'a read-only command changed a dirty-log file');
  assert.equal(sha(join(dir, 'replayed.raw')), '3ba3b309425b7ff5e8e0199edceed95226250f880c53b24e8eae93865f3fad5e');
  if (!requireOracle(t, 'qemu-img')) return;
  assert.equal(dc(['convert', copy, 'replayed.vhdx']).status, 0);
  qemuImg(['check', '-f', 'vhdx', join(dir, 'replayed.vhdx')]);
});

test('convert round trips VHDX -> VHD -> raw -> VHDX keep content and sparseness; qemu-img agrees', (t) => {
  assert.equal(dc(['convert', 'snap.avhdx', 'flat.vhd', '-O', 'vhd']).status, 0);
  assert.equal(dc(['convert', 'flat.vhd', 'flat.raw', '-O', 'raw']).status, 0);
  assert.equal(dc(['convert', 'flat.raw', 'again.vhdx', '-f', 'raw', '--type', 'fixed', '--block-size', '8M']).status, 0);
  const chain = dc(['read', 'snap.avhdx']).raw;
  for (const f of ['flat.vhd', 'again.vhdx']) assert.ok(dc(['read', f]).raw.equals(chain), f);
  assert.ok(readFileSync(join(dir, 'flat.raw')).equals(chain));
  // Sparse: 40 MiB virtual with ~4 MiB of data.
  assert.ok(statSync(join(dir, 'flat.vhd')).size < 12 * 1024 * 1024, 'VHD output is not sparse');
  assert.ok(statSync(join(dir, 'flat.raw')).blocks * 512 < 12 * 1024 * 1024, 'raw output is not sparse');
  if (!requireOracle(t, 'qemu-img')) return;
  qemuImg(['check', '-f', 'vhdx', join(dir, 'again.vhdx')]);
  const viaQemu = join(dir, 'q.raw');
  qemuImg(['convert', '-f', 'vhdx', '-O', 'raw', join(dir, 'again.vhdx'), viaQemu]);
  assert.ok(readFileSync(viaQemu).equals(chain));
});

test('bad input: a clear typed error, the documented exit code, and no file changed', () => {
  writeFileSync(join(dir, 'junk.vhdx'), randomBytes(3 * 1024 * 1024));
  const junkSha = sha(join(dir, 'junk.vhdx'));
  const r = dc(['info', 'junk.vhdx', '--json']);
  assert.equal(r.status, 3);
  assert.equal(JSON.parse(r.stdout).error.code, 'UNKNOWN_FORMAT');
  assert.equal(dc(['check', 'junk.vhdx']).status, 3, 'a file that is not a disk image is bad input (exit 3), not a finding');
  assert.equal(dc(['write', 'junk.vhdx', '--offset', '0'], Buffer.from('x')).status, 3);
  assert.equal(sha(join(dir, 'junk.vhdx')), junkSha);

  // A broken chain: the parent changed after the child was made.
  const snapSha = sha(join(dir, 'snap.avhdx'));
  copyFileSync(join(dir, 'base.vhdx'), join(dir, 'base.keep'));
  const baseSha = sha(join(dir, 'base.vhdx'));
  const refused = dc(['write', 'base.vhdx', '--offset', '0'], Buffer.alloc(512, 1));
  assert.equal(refused.status, 4, 'writing into a disk a checkpoint depends on is refused');
  assert.match(refused.stderr, /HAS_DEPENDENTS.*snap\.avhdx/);
  assert.equal(sha(join(dir, 'base.vhdx')), baseSha);
  assert.equal(dc(['write', 'base.vhdx', '--offset', '0', '--ignore-dependents'], Buffer.alloc(512, 1)).status, 0);
  const broken = dc(['read', 'snap.avhdx', '--length', '512']);
  assert.equal(broken.status, 4);
  assert.match(broken.stderr, /PARENT_MISMATCH/);
  assert.equal(dc(['check', 'snap.avhdx']).status, 1);
  assert.equal(sha(join(dir, 'snap.avhdx')), snapSha);
  copyFileSync(join(dir, 'base.keep'), join(dir, 'base.vhdx'));

  assert.equal(dc(['create', 'base.vhdx', '--size', '1G']).status, 5, 'create must refuse an existing file');
  assert.equal(dc(['create', 'x.vhdx', '--size', '1G', '--block-size', '3M']).status, 2);
  assert.equal(dc(['create', 'y.vhdx', '--size', '10G', '--logical-sector', '1024']).status, 2);
  assert.equal(dc(['read', 'snap.avhdx', '--offset', '41943040', '--length', '1']).status, 2);
  assert.equal(dc(['frobnicate']).status, 2);
  const help = dc(['--help']);
  assert.equal(help.status, 0);
  assert.match(help.stdout, /Exit codes/);
});

test('convert honours an AbortSignal and removes the partial target', async () => {
  const controller = new AbortController();
  let calls = 0;
  const target = join(dir, 'cancelled.vhdx');
  await assert.rejects(
    convert(join(dir, 'snap.avhdx'), target, {
      format: 'vhdx',
      signal: controller.signal,
      onProgress: () => {
        if (++calls === 2) controller.abort();
      },
    }),
    (e: unknown) => isDiskchainError(e) && e.code === 'ABORTED',
  );
  assert.throws(() => statSync(target), /ENOENT/);
  assert.throws(() => statSync(partialPath(target)), /ENOENT/);
});

test('qemu-img made dynamic VHDX reads the same through diskchain', (t) => {
  if (!requireOracle(t, 'qemu-img')) return;
  const raw = join(dir, 'src.raw');
  const content = Buffer.alloc(9 * 1024 * 1024 + 4096);
  randomBytes(2 * 1024 * 1024).copy(content, 3 * 1024 * 1024);
  content.fill(7, content.length - 4096);
  writeFileSync(raw, content);
  qemuImg(['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic,block_size=1M', raw, join(dir, 'q.vhdx')]);
  assert.ok(dc(['read', 'q.vhdx']).raw.equals(content));
});

test('chain, map and compare describe the chain as it is', () => {
  const chain = JSON.parse(dc(['chain', 'snap.avhdx', '--json']).stdout);
  assert.deepEqual(chain.layers.map((l: { path: string }) => l.path), ['snap.avhdx', join(dir, 'base.vhdx')]);
  assert.equal(chain.layers[0].link.identityMatches, true);
  const { extents } = JSON.parse(dc(['map', 'snap.avhdx', '--json']).stdout);
  // Extents cover the disk exactly, in order.
  let at = 0;
  for (const e of extents) {
    assert.equal(e.offset, at);
    at += e.length;
  }
  assert.equal(at, 40 * 1024 * 1024);
  // The unaligned checkpoint write made the child own the sectors around offset 1000001.
  const own = extents.find((e: { offset: number; length: number }) => e.offset <= 1000001 && e.offset + e.length > 1000001);
  assert.equal(own.file, 'snap.avhdx');
  assert.equal(own.state, 'data');
  assert.ok(extents.some((e: { file: string | null }) => e.file === join(dir, 'base.vhdx')));
  assert.ok(extents.some((e: { state: string }) => e.state === 'absent'));
  assert.equal(dc(['compare', 'snap.avhdx', 'flat.vhd']).status, 0);
  const differ = dc(['compare', 'snap.avhdx', 'base.vhdx', '--json']);
  assert.equal(differ.status, 1);
  assert.equal(JSON.parse(differ.stdout).firstDifference, 1000001);
});
