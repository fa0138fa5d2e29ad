import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, symlinkSync, truncateSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { createChild, createDisk } from '../src/api/create.js';
import { catalogFolders, childrenOf, parentCandidates } from '../src/chain/catalog.js';
import { openDisk } from '../src/chain/open-chain.js';
import type { FormatName, LinkIdentity } from '../src/formats/types.js';
import { uniqueIdToBytes } from '../src/formats/vhd/unique-id.js';
import { scanFolders, shellQuote, type ScanReport } from '../src/ops/scan.js';
import { patchHeader } from './helpers/vhd-images.js';
import { pseudoRandomBytes } from './helpers/vhd-util.js';
import { updateHeader } from './helpers/vhdx-damage.js';
import { CLI as MAIN } from './helpers/cli.js';

const MiB = 1024 * 1024;

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'diskchain-scan-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A dynamic base disk with `seed`-derived data in its first 64 KiB. */
async function makeBase(path: string, format: Exclude<FormatName, 'raw'>, seed: number, size = 8 * MiB): Promise<LinkIdentity> {
  const disk = await createDisk(path, format, { diskType: 'dynamic', virtualSize: size });
  await disk.write(pseudoRandomBytes(64 * 1024, seed), 0);
  await disk.close();
  return identityOf(path);
}

/** A checkpoint over `parent`, with 32 KiB of its own at seed × 256 KiB (written before any child of it exists). */
async function makeChild(path: string, parent: string, seed: number): Promise<LinkIdentity> {
  const disk = await createChild(path, parent);
  await disk.write(pseudoRandomBytes(32 * 1024, seed), seed * 256 * 1024);
  await disk.close();
  return identityOf(path);
}

/** What a chain made by makeBase(baseSeed) and makeChild(seeds...) reads as. */
function modelContent(size: number, baseSeed: number, childSeeds: number[]): Buffer {
  const out = Buffer.alloc(size);
  out.set(pseudoRandomBytes(64 * 1024, baseSeed), 0);
  for (const seed of childSeeds) out.set(pseudoRandomBytes(32 * 1024, seed), seed * 256 * 1024);
  return out;
}

async function identityOf(path: string): Promise<LinkIdentity> {
  const disk = await openDisk(path);
  try {
    return disk.identity();
  } finally {
    await disk.close();
  }
}

/** Sets mtimes so "newest" is decided by the test, not by the clock. */
function age(path: string, minutesAgo: number): void {
  const when = new Date(Date.UTC(2024, 0, 1, 12, 0, 0) - minutesAgo * 60_000);
  utimesSync(path, when, when);
}

/** sha256 of every regular file under `dir`. */
function hashes(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.set(p, createHash('sha256').update(readFileSync(p)).digest('hex'));
    }
  };
  walk(dir);
  return out;
}

/** Scans and asserts that no file under the folder changed. */
async function scanUnchanged(dir: string): Promise<ScanReport> {
  const before = hashes(dir);
  const report = await scanFolders([dir]);
  assert.deepEqual(hashes(dir), before, 'scan changed a file');
  return report;
}

/** The diskchain CLI as shipped: `node dist/bin/diskchain.js ...` (the bundle). */
function cli(args: string[], cwd: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('node', [MAIN, ...args], { cwd, encoding: 'utf8', maxBuffer: 64 * MiB });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs printed commands with sh from `cwd`, `diskchain` being this build's CLI. */
function runPrinted(commands: string[], cwd: string): void {
  execFileSync('sh', ['-ec', `diskchain() { node ${shellQuote(MAIN)} "$@"; }\n${commands.join('\n')}`], { cwd, stdio: 'pipe' });
}

test('two trees in one folder (VHDX and VHD), newest leaf by mtime, merge plan; non-disk files ignored', { timeout: 120_000 }, async (t) => {
  const dir = tempDir(t);
  const p = (n: string): string => join(dir, n);
  await makeBase(p('base.vhdx'), 'vhdx', 1);
  await makeChild(p('snap1.avhdx'), p('base.vhdx'), 2);
  await makeChild(p('snap2.avhdx'), p('snap1.avhdx'), 3);
  await makeBase(p('old.vhd'), 'vhd', 4, 6 * MiB);
  await makeChild(p('old-snap.avhd'), p('old.vhd'), 5);
  age(p('base.vhdx'), 30);
  age(p('snap1.avhdx'), 20);
  age(p('snap2.avhdx'), 10);
  age(p('old.vhd'), 50);
  age(p('old-snap.avhd'), 40);
  writeFileSync(p('notes.txt'), 'not a disk');
  writeFileSync(p('empty.vhdx'), '');
  writeFileSync(p('random.avhdx'), pseudoRandomBytes(5000, 9));
  execFileSync('mkfifo', [p('pipe.vhdx')]); // opening a FIFO would hang the scan

  const r = await scanUnchanged(dir);
  assert.equal(r.summary.disks, 5);
  assert.equal(r.summary.consistent, true);
  assert.deepEqual([r.orphans, r.identityMismatches, r.staleLinks, r.problems, r.cycles], [[], [], [], [], []]);
  assert.deepEqual(r.trees.map((x) => [x.root, x.format, x.complete]), [[p('base.vhdx'), 'vhdx', true], [p('old.vhd'), 'vhd', true]]);
  const [vhdx, vhd] = r.trees as [ScanReport['trees'][0], ScanReport['trees'][0]];
  assert.deepEqual(vhdx.nodes.map((n) => [n.path, n.depth, n.parent, n.children]), [
    [p('base.vhdx'), 0, null, [p('snap1.avhdx')]],
    [p('snap1.avhdx'), 1, p('base.vhdx'), [p('snap2.avhdx')]],
    [p('snap2.avhdx'), 2, p('snap1.avhdx'), []],
  ]);
  assert.deepEqual(vhdx.leaves.map((l) => [l.path, l.newest, l.chain]), [[p('snap2.avhdx'), true, [p('snap2.avhdx'), p('snap1.avhdx'), p('base.vhdx')]]]);
  assert.equal(vhdx.bytes, ['base.vhdx', 'snap1.avhdx', 'snap2.avhdx'].reduce((s, n) => s + statSync(p(n)).size, 0));
  assert.equal(vhdx.nodes[2]!.mtime, '2024-01-01T11:50:00.000Z');
  assert.ok(vhdx.nodes[1]!.allocatedBytes > 0 && vhdx.nodes[1]!.virtualSize === 8 * MiB);
  assert.deepEqual(vhd.nodes.map((n) => [n.path, n.format, n.type]), [[p('old.vhd'), 'vhd', 'dynamic'], [p('old-snap.avhd'), 'vhd', 'differencing']]);

  const [planX, planV] = r.plan as [ScanReport['plan'][0], ScanReport['plan'][0]];
  assert.equal(planX.action, 'merge');
  assert.deepEqual(planX.steps.map((s) => [s.command, ...s.args]), [['diskchain', 'merge', p('snap2.avhdx')], ['diskchain', 'merge', p('snap1.avhdx')]]);
  assert.deepEqual(planX.commands, [`diskchain merge ${p('snap2.avhdx')}`, `diskchain merge ${p('snap1.avhdx')}`]);
  assert.equal(planX.result, p('base.vhdx'));
  assert.deepEqual(planV.commands, [`diskchain merge ${p('old-snap.avhd')}`]);
  assert.equal(planV.result, p('old.vhd'));
});

test('renamed and moved files are rebuilt by identity; stale links get reparent steps; the printed plan works', async (t) => {
  const dir = tempDir(t);
  const p = (n: string): string => join(dir, n);
  await makeBase(p('base.vhdx'), 'vhdx', 1);
  await makeChild(p('a.avhdx'), p('base.vhdx'), 2);
  await makeChild(p('b.avhdx'), p('a.avhdx'), 3);
  // Renamed: a → "Checkpoint 1 (copy).avhdx"; moved: base into a subfolder, the leaf two levels down.
  renameSync(p('a.avhdx'), p('Checkpoint 1 (copy).avhdx'));
  mkdirSync(p('moved/leaf'), { recursive: true });
  renameSync(p('base.vhdx'), p('moved/base-renamed.vhdx'));
  renameSync(p('b.avhdx'), p('moved/leaf/b.avhdx'));
  const a = p('Checkpoint 1 (copy).avhdx');
  const base = p('moved/base-renamed.vhdx');
  const b = p('moved/leaf/b.avhdx');

  const r = await scanUnchanged(dir);
  assert.equal(r.trees.length, 1);
  const tree = r.trees[0]!;
  assert.equal(tree.root, base);
  assert.deepEqual(tree.nodes.map((n) => [n.path, n.parent, n.depth]), [[base, null, 0], [a, base, 1], [b, a, 2]]);
  assert.deepEqual(r.staleLinks.map((s) => [s.child, s.parent]).sort(), [[a, base], [b, a]].sort());
  const bLink = r.staleLinks.find((s) => s.child === b)!;
  assert.deepEqual(bLink.targets.map((x) => [x.key, x.stored, x.path, x.state]), [
    ['relative_path', '.\\a.avhdx', p('moved/leaf/a.avhdx'), 'missing'],
  ]);
  assert.equal(r.summary.consistent, true, 'stale links alone are not findings');
  assert.deepEqual([r.orphans, r.identityMismatches, r.problems], [[], [], []]);

  const plan = r.plan[0]!;
  assert.equal(plan.action, 'merge');
  assert.deepEqual(plan.steps.map((s) => s.args), [
    ['reparent', a, base],
    ['reparent', b, a],
    // b's ancestors are above its folder: diskchain only opens them when told where they may live.
    ['merge', b, '--search-path', dir],
    ['merge', a],
  ]);
  assert.equal(plan.commands[0], `diskchain reparent '${a}' ${base}`, 'paths with spaces and parentheses are shell-quoted');
  assert.equal(plan.result, base);
  const human = cli(['scan', dir], tempDir(t));
  assert.equal(human.status, 0, human.stderr);
  for (const c of plan.commands) assert.ok(human.stdout.includes(`\n${c}\n`), `human output lacks: ${c}`);
  assert.match(human.stdout, /\n {2}moved\/leaf\/b\.avhdx -> Checkpoint 1 \(copy\)\.avhdx\n/);

  runPrinted(plan.commands, tempDir(t));
  assert.deepEqual(readdirSync(dir, { recursive: true }).map(String).filter((n) => n.endsWith('hdx')).sort(), ['moved/base-renamed.vhdx']);
  const after = spawnSync('node', [MAIN, 'read', base], { maxBuffer: 64 * MiB });
  assert.equal(after.status, 0, after.stderr.toString());
  assert.ok(after.stdout.equals(modelContent(8 * MiB, 1, [2, 3])), 'the base after the plan does not hold the newest state');
  const rescan = await scanFolders([dir]);
  assert.deepEqual(rescan.plan[0]!.notes, [`${base} is already a standalone disk`]);
});

test('a branch (two children of one parent) gives convert steps that run as printed and hold each leaf', async (t) => {
  const dir = tempDir(t);
  const p = (n: string): string => join(dir, n);
  await makeBase(p('base.vhdx'), 'vhdx', 1);
  await makeChild(p('mid.avhdx'), p('base.vhdx'), 2);
  await makeChild(p('left.avhdx'), p('mid.avhdx'), 3);
  mkdirSync(p('elsewhere'));
  await makeChild(p('elsewhere/right.avhdx'), p('mid.avhdx'), 4);
  age(p('left.avhdx'), 5);
  age(p('elsewhere/right.avhdx'), 60);

  const r = await scanUnchanged(dir);
  const tree = r.trees[0]!;
  assert.deepEqual(tree.leaves.map((l) => [l.path, l.newest]), [[p('left.avhdx'), true], [p('elsewhere/right.avhdx'), false]]);
  assert.equal(tree.newestLeaf, p('left.avhdx'));
  assert.deepEqual(r.staleLinks, []);
  const plan = r.plan[0]!;
  assert.equal(plan.action, 'convert');
  assert.ok(plan.notes.some((n) => n.includes(p('mid.avhdx')) && n.includes('2 children')), plan.notes.join('\n'));
  assert.deepEqual(plan.steps.map((s) => s.args), [
    ['convert', p('left.avhdx'), p('left-standalone.vhdx'), '-O', 'vhdx'],
    // right's ancestors are above its folder: named so diskchain may open them.
    ['convert', p('elsewhere/right.avhdx'), p('elsewhere/right-standalone.vhdx'), '-O', 'vhdx', '--search-path', dir],
  ]);
  assert.ok(!plan.steps.some((s) => s.args[0] === 'merge'), 'merging a branched tree is unsafe');
  assert.equal(plan.result, p('left-standalone.vhdx'));

  const before = hashes(dir);
  runPrinted(plan.commands, tempDir(t));
  const after = hashes(dir);
  for (const [path, sum] of before) assert.equal(after.get(path), sum, `convert changed ${path}`);
  for (const [target, seeds] of [['left-standalone.vhdx', [2, 3]], ['elsewhere/right-standalone.vhdx', [2, 4]]] as const) {
    const read = spawnSync('node', [MAIN, 'read', p(target)], { maxBuffer: 64 * MiB });
    assert.equal(read.status, 0, read.stderr.toString());
    assert.ok(read.stdout.equals(modelContent(8 * MiB, 1, [...seeds])), `${target} does not hold its leaf's state`);
  }
  // A second scan names the next free target and sees the new standalone disks as their own trees.
  const again = await scanFolders([dir]);
  assert.equal(again.plan[0]!.steps[0]!.args[2], p('left-standalone-2.vhdx'));
  assert.equal(again.trees.length, 3);
});

test('an orphan (parent deleted) is reported with its last known paths and expected identity; CLI --json exits 1', async (t) => {
  const dir = tempDir(t);
  const p = (n: string): string => join(dir, n);
  const baseId = await makeBase(p('base.vhdx'), 'vhdx', 1);
  await makeChild(p('snap.avhdx'), p('base.vhdx'), 2);
  await makeChild(p('snap2.avhdx'), p('snap.avhdx'), 3);
  unlinkSync(p('base.vhdx'));

  const r = await scanUnchanged(dir);
  assert.equal(r.orphans.length, 1);
  const o = r.orphans[0]!;
  assert.equal(o.path, p('snap.avhdx'));
  assert.deepEqual(o.expected, baseId);
  assert.deepEqual(o.lastKnown.map((l) => [l.key, l.path]), [['relative_path', '.\\base.vhdx']]);
  assert.ok(o.targets.every((x) => x.state === 'missing' && x.path === p('base.vhdx')));
  assert.equal(r.trees.length, 1);
  assert.equal(r.trees[0]!.complete, false);
  assert.deepEqual(r.plan[0]!.steps, []);
  assert.equal(r.plan[0]!.result, null);
  assert.match(r.plan[0]!.notes[0]!, /base of this tree is missing/);
  assert.equal(r.summary.consistent, false);

  const out = cli(['scan', dir, '--json'], tempDir(t));
  assert.equal(out.status, 1, out.stderr);
  const json = JSON.parse(out.stdout) as ScanReport;
  assert.deepEqual(json.orphans, JSON.parse(JSON.stringify(r.orphans)));
  assert.equal(json.summary.orphans, 1);
  const human = cli(['scan', dir], tempDir(t));
  assert.equal(human.status, 1);
  assert.match(human.stdout, /orphans \(parent not found by identity\):\n {2}snap\.avhdx expects a parent with DataWriteGuid/);
  assert.match(human.stdout, /INCOMPLETE/);
});

test('an identity mismatch (parent replaced by another disk of the same name) names the file that fits', async (t) => {
  const dir = tempDir(t);
  const p = (n: string): string => join(dir, n);
  const realId = await makeBase(p('base.vhdx'), 'vhdx', 1);
  await makeChild(p('snap.avhdx'), p('base.vhdx'), 2);
  mkdirSync(p('archive'));
  renameSync(p('base.vhdx'), p('archive/base.vhdx'));
  const impostorId = await makeBase(p('base.vhdx'), 'vhdx', 7);

  const r = await scanUnchanged(dir);
  assert.equal(r.identityMismatches.length, 1);
  const m = r.identityMismatches[0]!;
  assert.deepEqual([m.child, m.found, m.candidate, m.linkWorks], [p('snap.avhdx'), p('base.vhdx'), p('archive/base.vhdx'), false]);
  assert.deepEqual(m.foundIdentity, impostorId);
  assert.deepEqual(m.expected, realId);
  assert.deepEqual(r.staleLinks.map((s) => [s.child, s.parent]), [[p('snap.avhdx'), p('archive/base.vhdx')]]);
  const tree = r.trees.find((x) => x.root === p('archive/base.vhdx'))!;
  assert.deepEqual(tree.nodes.map((n) => n.path), [p('archive/base.vhdx'), p('snap.avhdx')]);
  assert.deepEqual(r.plan.find((x) => x.root === tree.root)!.steps.map((s) => s.args), [['reparent', p('snap.avhdx'), p('archive/base.vhdx')], ['merge', p('snap.avhdx')]]);
  assert.equal(r.summary.consistent, false);
  const out = cli(['scan', dir], dir);
  assert.equal(out.status, 1);
  assert.match(out.stdout, /fits by identity: archive\/base\.vhdx/);

  runPrinted(r.plan.find((x) => x.root === tree.root)!.commands, tempDir(t));
  const after = spawnSync('node', [MAIN, 'read', p('archive/base.vhdx')], { maxBuffer: 64 * MiB });
  assert.ok(after.stdout.equals(modelContent(8 * MiB, 1, [2])), 'the plan did not put the checkpoint into the parent that fits');
  const impostor = spawnSync('node', [MAIN, 'read', p('base.vhdx')], { maxBuffer: 64 * MiB });
  assert.ok(impostor.stdout.equals(modelContent(8 * MiB, 7, [])), 'the impostor was changed');
});

test('corrupt files (truncated, garbage behind a VHDX signature) are problems; plans then avoid merging', async (t) => {
  const dir = tempDir(t);
  const p = (n: string): string => join(dir, n);
  await makeBase(p('base.vhdx'), 'vhdx', 1);
  await makeChild(p('snap.avhdx'), p('base.vhdx'), 2);
  // A parent cut short (a failed copy): its checkpoint becomes an orphan pointing at a damaged file.
  await makeBase(p('cut.vhdx'), 'vhdx', 3, 4 * MiB);
  await makeChild(p('cut-snap.avhdx'), p('cut.vhdx'), 4);
  truncateSync(p('cut.vhdx'), 100 * 1024);
  const garbage = pseudoRandomBytes(300 * 1024, 5);
  garbage.set(Buffer.from('vhdxfile'), 0);
  writeFileSync(p('garbage.bin'), garbage);

  const r = await scanUnchanged(dir);
  assert.deepEqual(r.problems.map((x) => x.path), [p('cut.vhdx'), p('garbage.bin')]);
  for (const x of r.problems) {
    assert.ok(['CORRUPT', 'TRUNCATED'].includes(x.code), `${x.path}: ${x.code}`);
    assert.ok(x.message.length > 0);
  }
  assert.equal(r.problems[0]!.code, 'TRUNCATED');
  assert.equal(typeof r.problems[0]!.offset, 'number');
  assert.equal(r.summary.disks, 3);
  assert.deepEqual(r.orphans.map((o) => [o.path, o.targets.map((x) => x.state)]), [[p('cut-snap.avhdx'), ['unreadable disk']]]);
  const orphanPlan = r.plan.find((x) => x.root === p('cut-snap.avhdx'))!;
  assert.deepEqual(orphanPlan.steps, []);
  assert.ok(orphanPlan.notes.some((n) => n.startsWith(`${p('cut.vhdx')} (named by relative_path) looks like a disk but could not be opened`)), orphanPlan.notes.join('\n'));

  const plan = r.plan.find((x) => x.root === p('base.vhdx'))!;
  assert.equal(plan.action, 'convert');
  assert.ok(plan.notes.some((n) => /2 file\(s\) or folder\(s\) could not be read or were not scanned/.test(n)));
  assert.deepEqual(plan.steps.map((s) => s.args), [['convert', p('snap.avhdx'), p('snap-standalone.vhdx'), '-O', 'vhdx']]);
  const out = cli(['scan', dir, '--json'], dir);
  assert.equal(out.status, 1);
  assert.deepEqual((JSON.parse(out.stdout) as ScanReport).problems, JSON.parse(JSON.stringify(r.problems)));
});

test('symlink aliases are listed once, directory symlink loops are not followed, limits are reported', async (t) => {
  const dir = tempDir(t);
  const p = (n: string): string => join(dir, n);
  await makeBase(p('base.vhdx'), 'vhdx', 1);
  await makeChild(p('snap.avhdx'), p('base.vhdx'), 2);
  symlinkSync(p('base.vhdx'), p('alias.vhdx'));
  symlinkSync(p('snap.avhdx'), p('a-link-to-snap.avhdx'));
  symlinkSync(dir, p('loop'));
  mkdirSync(p('d1/d2/d3'), { recursive: true });
  await makeBase(p('d1/d2/d3/deep.vhd'), 'vhd', 3, 2 * MiB);

  // Links out of the folder are followed once: a file link and a folder link (with a link back in).
  const elsewhere = tempDir(t);
  await makeBase(join(elsewhere, 'outside.vhdx'), 'vhdx', 4, 2 * MiB);
  mkdirSync(join(elsewhere, 'folder'));
  await makeBase(join(elsewhere, 'folder/in-linked-folder.vhd'), 'vhd', 5, 2 * MiB);
  symlinkSync(dir, join(elsewhere, 'folder/back'));
  symlinkSync(join(elsewhere, 'outside.vhdx'), p('z-link-out.vhdx'));
  symlinkSync(join(elsewhere, 'folder'), p('z-linked-folder'));

  const c = await catalogFolders([dir]);
  assert.deepEqual(c.entries.map((e) => [e.path, e.realPath]), [
    [p('base.vhdx'), p('base.vhdx')],
    [p('d1/d2/d3/deep.vhd'), p('d1/d2/d3/deep.vhd')],
    [p('snap.avhdx'), p('snap.avhdx')],
    [p('z-link-out.vhdx'), join(elsewhere, 'outside.vhdx')],
    [p('z-linked-folder/in-linked-folder.vhd'), join(elsewhere, 'folder/in-linked-folder.vhd')],
  ]);
  assert.deepEqual(c.problems, []);
  const [base, , snap] = c.entries as [NonNullable<(typeof c.entries)[0]>, unknown, NonNullable<(typeof c.entries)[0]>];
  assert.equal(base.fileSize, statSync(p('base.vhdx')).size);
  assert.equal(base.mtimeMs, statSync(p('base.vhdx')).mtimeMs);
  assert.equal(base.dirtyLog, false);
  assert.deepEqual(childrenOf(c, base.identity).map((e) => e.path), [p('snap.avhdx')]);
  assert.deepEqual(parentCandidates(c, snap.parent!).map((e) => e.path), [p('base.vhdx')]);
  assert.equal(snap.format, 'vhdx');
  assert.equal(snap.diskType, 'differencing');
  assert.equal(typeof snap.virtualDiskId, 'string');
  assert.equal(c.entries[1]!.virtualDiskId, (await openDisk(p('d1/d2/d3/deep.vhd')).then(async (d) => [d.details().uniqueId, await d.close()]))[0]);

  const shallow = await catalogFolders([dir], { maxDepth: 2 });
  assert.deepEqual(shallow.problems.map((x) => [x.path, x.code]), [[p('d1/d2/d3'), 'TOO_DEEP']]);
  const few = await catalogFolders([dir], { maxFiles: 1 });
  assert.equal(few.entries.length, 1);
  assert.deepEqual(few.problems.map((x) => x.code), ['TOO_MANY_FILES']);

  // Only the alias given: it is listed under the path it was found by, with its real path.
  const viaAlias = await catalogFolders([p('alias.vhdx')]);
  assert.deepEqual(viaAlias.entries.map((e) => [e.path, e.realPath]), [[p('alias.vhdx'), p('base.vhdx')]]);
  const r = await scanUnchanged(dir);
  assert.equal(r.trees.find((x) => x.root === p('base.vhdx'))!.nodes.length, 2);
});

test('a dirty VHDX log is reported and the file is left untouched', async (t) => {
  const dir = tempDir(t);
  const p = (n: string): string => join(dir, n);
  await makeBase(p('clean.vhdx'), 'vhdx', 1);
  const img = new Uint8Array(readFileSync(p('clean.vhdx')));
  updateHeader(img, { logGuid: '5c1a9b7e-0d2f-4c6e-9a41-3b8d2e7f6a10' });
  writeFileSync(p('dirty.vhdx'), img);

  const r = await scanUnchanged(dir);
  assert.deepEqual(r.dirtyLogs.map((d) => d.path), [p('dirty.vhdx')]);
  assert.equal(r.trees.find((x) => x.root === p('dirty.vhdx'))!.nodes[0]!.dirtyLog, true);
  assert.equal(r.trees.find((x) => x.root === p('clean.vhdx'))!.nodes[0]!.dirtyLog, false);
  assert.equal(r.summary.consistent, true);
});

test('a parent cycle is reported and not followed', async (t) => {
  const dir = tempDir(t);
  const p = (n: string): string => join(dir, n);
  await makeBase(p('x.vhd'), 'vhd', 1, 2 * MiB);
  await makeChild(p('a.avhd'), p('x.vhd'), 2);
  const bId = await makeChild(p('b.avhd'), p('a.avhd'), 3);
  if (bId.format !== 'vhd') throw new Error('expected a VHD identity');
  // a now names b as its parent (by identity): a → b → a.
  const patched = patchHeader(new Uint8Array(readFileSync(p('a.avhd'))), (v) => {
    new Uint8Array(v.buffer, v.byteOffset + 40, 16).set(uniqueIdToBytes(bId.uniqueId));
    v.setUint32(56, bId.timestamp);
  });
  writeFileSync(p('a.avhd'), patched);

  const r = await scanUnchanged(dir);
  assert.deepEqual(r.cycles.map((c) => [...c.paths].sort()), [[p('a.avhd'), p('b.avhd')]]);
  for (const root of [p('a.avhd'), p('b.avhd')]) {
    const tree = r.trees.find((x) => x.root === root)!;
    assert.equal(tree.complete, false);
    assert.deepEqual(r.plan.find((x) => x.root === root)!.steps, []);
  }
  assert.equal(r.summary.consistent, false);
  // x.vhd lost its only child to the cycle: a tree of its own.
  assert.equal(r.trees.find((x) => x.root === p('x.vhd'))!.nodes.length, 1);
});

test('a copy of the parent elsewhere: the one the stored path names is chosen, the copy is listed as a duplicate', async (t) => {
  const dir = tempDir(t);
  const p = (n: string): string => join(dir, n);
  await makeBase(p('base.vhdx'), 'vhdx', 1);
  await makeChild(p('snap.avhdx'), p('base.vhdx'), 2);
  mkdirSync(p('backup'));
  copyFileSync(p('base.vhdx'), p('backup/base.vhdx'));
  const r = await scanUnchanged(dir);
  assert.deepEqual(r.staleLinks, []);
  assert.deepEqual(r.trees.find((x) => x.nodes.length === 2)!.root, p('base.vhdx'));
  assert.deepEqual(r.duplicates.map((d) => d.paths), [[p('backup/base.vhdx'), p('base.vhdx')]]);
});

test('scan refuses a folder that does not exist (usage error)', (t) => {
  const out = cli(['scan', join(tempDir(t), 'nope'), '--json'], tmpdir());
  assert.equal(out.status, 2);
  assert.equal(JSON.parse(out.stdout).error.code, 'INVALID_ARGUMENT');
});
