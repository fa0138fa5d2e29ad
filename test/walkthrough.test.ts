/**
 * The walkthrough from the field, on a real filesystem, for VHDX and for VHD (same steps):
 *
 *   a FAT filesystem (mkfs.fat) holding ORIGINAL.TXT becomes a base disk (diskchain convert);
 *   three checkpoints c1, c2, c3 are taken over it, and a file is added through the chain after each
 *   (read the disk, mcopy into the image, write back only the sectors that changed, as a guest would);
 *
 *   A. the checkpoints are merged in order, most recent first;
 *   B. out of order, with the refusals an admin meets on the way (a kept checkpoint that still
 *      depends on the base, a base restored from an exported backup) and the recovery
 *      (reparent --ignore-id-mismatch), then the rest merged;
 *   C. every file renamed (one moved into a subfolder), `diskchain scan --json` rebuilds the tree by
 *      identity, and the plan's commands are run through the shell exactly as printed.
 *
 * Each scenario ends with one standalone disk whose content has the sha256 read through c3 before
 * anything was merged, that mtools lists with the four files and their contents, that `diskchain
 * check` finds clean, and that qemu-img and pyvhdi (independent readers) read the same.
 */
import assert from 'node:assert/strict';
import { execSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test, type TestContext } from 'node:test';
import { changedRuns, fatDir, fatGet, fatList, fatPut, makeFat } from './helpers/fat.js';
import { pyvhdiSha256, qemuImg, requireOracle } from './helpers/oracles.js';
import { CLI as MAIN } from './helpers/cli.js';

const MiB = 1024 * 1024;
const IMAGE_SIZE = 64 * MiB;

/** Deterministic printable text of `size` bytes (so files span several clusters and blocks). */
function text(seed: string, size: number): string {
  const lines: string[] = [];
  let total = 0;
  for (let i = 0; total < size; i++) {
    const line = `${seed} line ${i} ${createHash('sha256').update(`${seed}:${i}`).digest('hex')}\r\n`;
    lines.push(line);
    total += line.length;
  }
  return lines.join('').slice(0, size);
}

/** The four files, in the order they are added: on the base, then through c1, c2 and c3. */
const FILES: Array<{ name: string; content: string }> = [
  { name: 'ORIGINAL.TXT', content: text('original, on the base disk', 300 * 1024) },
  { name: 'CHECK01.TXT', content: text('added after checkpoint 1', 5000) },
  // Large enough to cross several 2 MiB checkpoint blocks.
  { name: 'CHECK02.TXT', content: text('added after checkpoint 2', 5 * MiB + 123) },
  { name: 'NOW.TXT', content: 'the current state, added after checkpoint 3\r\n' },
];

type Format = 'vhdx' | 'vhd';

interface Layout {
  format: Format;
  base: string;
  c1: string;
  c2: string;
  c3: string;
}

function layoutFor(format: Format): Layout {
  const child = format === 'vhdx' ? 'avhdx' : 'avhd';
  return { format, base: `base.${format}`, c1: `c1.${child}`, c2: `c2.${child}`, c3: `c3.${child}` };
}

interface Run {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the diskchain CLI in `cwd`. */
function dc(cwd: string, args: string[], input?: Uint8Array): Run {
  const r = spawnSync(process.execPath, [MAIN, ...args], { cwd, input, maxBuffer: 64 * MiB, env: { ...process.env, NO_COLOR: '1' } });
  return { status: r.status ?? -1, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
}

function show(r: Run): string {
  return `exit ${r.status}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

/** Runs a command that must succeed. */
function ok(cwd: string, args: string[], input?: Uint8Array): Run {
  const r = dc(cwd, args, input);
  assert.equal(r.status, 0, `diskchain ${args.join(' ')} failed: ${show(r)}`);
  return r;
}

/** Runs a command that must be refused with exit 4 and a message naming `code` and each of `mentions`. */
function refused(cwd: string, args: string[], code: string, mentions: string[]): Run {
  const r = dc(cwd, args);
  assert.equal(r.status, 4, `diskchain ${args.join(' ')} should be refused with exit 4: ${show(r)}`);
  assert.match(r.stderr, new RegExp(`^diskchain: ${code}: `, 'm'), `diskchain ${args.join(' ')}: the message should name ${code}: ${show(r)}`);
  for (const m of mentions) assert.ok(r.stderr.includes(m), `diskchain ${args.join(' ')}: the message should mention ${JSON.stringify(m)}: ${show(r)}`);
  return r;
}

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function tempDir(t: TestContext, label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `diskchain-walkthrough-${label}-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** What `diskchain read` returns for `disk` (through its chain), saved as a raw image in `scratch`. */
function readRaw(cwd: string, disk: string, scratch: string, name: string): string {
  const out = join(scratch, name);
  rmSync(out, { force: true });
  ok(cwd, ['read', disk, '-o', out]);
  return out;
}

/**
 * Adds `file` to the disk `disk` through its chain: read, mcopy, write back the changed sectors.
 * Returns the raw image the disk reads as afterwards.
 */
function addThroughChain(cwd: string, disk: string, file: { name: string; content: string }, scratch: string, viaStdin: boolean): string {
  const before = readRaw(cwd, disk, scratch, 'before.img');
  const cur = join(scratch, 'cur.img');
  copyFileSync(before, cur);
  fatPut(cur, file.name, file.content);
  const runs = changedRuns(before, cur);
  assert.ok(runs.length > 0, `adding ${file.name} changed nothing`);
  const image = readFileSync(cur);
  for (const [i, run] of runs.entries()) {
    const piece = image.subarray(run.offset, run.offset + run.length);
    if (viaStdin) ok(cwd, ['write', disk, '--offset', String(run.offset)], piece);
    else {
      const pieceFile = join(scratch, `piece-${i}.bin`);
      writeFileSync(pieceFile, piece);
      ok(cwd, ['write', disk, '--offset', String(run.offset), '--input', pieceFile]);
    }
  }
  // The disk now reads as the image the file was copied into.
  const after = readRaw(cwd, disk, scratch, 'after.img');
  assert.equal(sha256File(after), sha256File(cur), `${disk} does not read back as the image ${file.name} was copied into`);
  return after;
}

/** The independent readers' view of a standalone disk: sha256 of its whole content. */
function qemuSha(disk: string, format: Format, scratch: string): string {
  const out = join(scratch, 'qemu.raw');
  rmSync(out, { force: true });
  // qemu sizes a VHD from its CHS geometry unless told to use the footer's current size (it only
  // trusts current size for creators it knows); Hyper-V uses current size.
  const source = format === 'vhdx' ? ['-f', 'vhdx', disk] : ['--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${disk}`];
  qemuImg(['convert', ...source, '-O', 'raw', out]);
  const sha = sha256File(out);
  rmSync(out, { force: true });
  return sha;
}

/** Asserts the FAT image holds exactly the first `count` files with their contents. */
function assertFiles(image: string, count: number, what: string): void {
  const want = FILES.slice(0, count);
  assert.deepEqual(fatList(image), want.map((f) => f.name), `${what}: mdir lists\n${fatDir(image)}`);
  for (const f of want) assert.ok(fatGet(image, f.name).equals(Buffer.from(f.content)), `${what}: ${f.name} has other content`);
}

/**
 * The end state of every scenario: `disk` is one standalone disk that reads as `expected`, lists
 * the four files, checks clean, and reads the same in qemu-img and pyvhdi.
 */
function assertStandaloneResult(t: TestContext, cwd: string, disk: string, format: Format, expected: string, scratch: string, what: string): void {
  const info = JSON.parse(ok(cwd, ['info', disk, '--json']).stdout) as { format: string; diskType: string; parent?: unknown; virtualSize: number };
  assert.equal(info.format, format, `${what}: format`);
  assert.equal(info.diskType, 'dynamic', `${what}: ${disk} should be a standalone dynamic disk`);
  assert.equal(info.parent ?? null, null, `${what}: ${disk} still has a parent`);
  assert.equal(info.virtualSize, IMAGE_SIZE);
  const chain = JSON.parse(ok(cwd, ['chain', disk, '--json']).stdout) as { layers: unknown[] };
  assert.equal(chain.layers.length, 1, `${what}: chain of ${disk}`);

  const raw = readRaw(cwd, disk, scratch, 'result.img');
  assert.equal(sha256File(raw), expected, `${what}: ${disk} does not hold the content read through c3 before the merges`);
  assertFiles(raw, FILES.length, what);
  const check = dc(cwd, ['check', disk]);
  assert.equal(check.status, 0, `${what}: diskchain check ${disk}: ${show(check)}`);

  const abs = resolve(cwd, disk);
  if (requireOracle(t, 'qemu-img')) assert.equal(qemuSha(abs, format, scratch), expected, `${what}: qemu-img reads ${disk} differently`);
  if (requireOracle(t, 'pyvhdi')) assert.equal(pyvhdiSha256(abs), expected, `${what}: pyvhdi reads ${disk} differently`);
}

/** The files of the four-layer chain, copied into a fresh folder (keeping their times, as cp -p does). */
function freshCopy(t: TestContext, source: string, l: Layout, label: string): string {
  const dir = tempDir(t, `${l.format}-${label}`);
  for (const f of [l.base, l.c1, l.c2, l.c3]) {
    copyFileSync(join(source, f), join(dir, f));
    const st = statSync(join(source, f));
    utimesSync(join(dir, f), st.atime, st.mtime);
  }
  return dir;
}

interface ScanPlanJson {
  trees: Array<{ root: string; complete: boolean; nodes: Array<{ path: string; parent: string | null }>; leaves: Array<{ path: string; mtime: string; chain: string[]; newest: boolean }>; newestLeaf: string }>;
  orphans: unknown[];
  identityMismatches: unknown[];
  staleLinks: Array<{ child: string; parent: string }>;
  plan: Array<{ root: string; action: string; steps: Array<{ command: string; args: string[]; reason: string }>; commands: string[]; result: string | null; notes: string[] }>;
  summary: { disks: number; trees: number; consistent: boolean };
}

for (const format of ['vhdx', 'vhd'] as const) {
  test(`walkthrough from the field (${format.toUpperCase()}): FAT filesystem, three checkpoints, merged in order, out of order, and after renames`, async (t) => {
    if (!requireOracle(t, 'mkfs.fat') || !requireOracle(t, 'mtools')) return;
    const l = layoutFor(format);
    const work = tempDir(t, format);
    const scratch = tempDir(t, `${format}-scratch`);

    // 1. A FAT filesystem with ORIGINAL.TXT in a raw file becomes the base disk.
    const fs = join(scratch, 'fs.img');
    makeFat(fs, IMAGE_SIZE);
    fatPut(fs, FILES[0]!.name, FILES[0]!.content);
    assertFiles(fs, 1, 'the raw filesystem');
    ok(work, ['convert', fs, l.base, '-f', 'raw', '-O', format]);
    assert.equal(sha256File(readRaw(work, l.base, scratch, 'base.img')), sha256File(fs), 'the base disk does not read as the raw image it was converted from');

    // 2. Checkpoints, each followed by a file added through the chain.
    const steps: Array<[child: string, parent: string]> = [
      [l.c1, l.base],
      [l.c2, l.c1],
      [l.c3, l.c2],
    ];
    const stateSha: string[] = [sha256File(fs)];
    for (const [i, [child, parent]] of steps.entries()) {
      ok(work, ['create', child, '--parent', parent]);
      // A new checkpoint reads as its parent.
      assert.equal(sha256File(readRaw(work, child, scratch, 'fresh.img')), stateSha[i], `${child} does not read as ${parent} right after it was made`);
      const now = addThroughChain(work, child, FILES[i + 1]!, scratch, i === 1);
      assertFiles(now, i + 2, `read through ${child}`);
      stateSha.push(sha256File(now));
    }
    const expected = stateSha[3]!;
    // Every checkpoint still reads as the state it froze.
    for (const [i, disk] of [l.base, l.c1, l.c2].entries()) {
      assert.equal(sha256File(readRaw(work, disk, scratch, 'older.img')), stateSha[i], `${disk} no longer reads as the state it froze`);
    }
    const chain = JSON.parse(ok(work, ['chain', l.c3, '--json']).stdout) as { layers: Array<{ link?: { identityMatches: boolean } }> };
    assert.equal(chain.layers.length, 4);
    assert.deepEqual(chain.layers.map((x) => x.link?.identityMatches ?? null), [true, true, true, null]);
    for (const name of [l.c1, l.c2, l.c3]) assert.equal(dc(work, ['check', name]).status, 0, `check ${name}`);
    // An independent reader agrees on the chain as written.
    if (requireOracle(t, 'pyvhdi')) {
      assert.equal(pyvhdiSha256(join(work, l.c3), [l.c2, l.c1, l.base].map((f) => join(work, f))), expected, 'pyvhdi reads the c3 chain differently');
    }

    await t.test('A: merge c3, c2, c1 in order; the base alone holds everything', (t) => {
      const dir = freshCopy(t, work, l, 'A');
      for (const c of [l.c3, l.c2, l.c1]) {
        const r = ok(dir, ['merge', c]);
        assert.ok(!existsSync(join(dir, c)), `merge ${c} should remove it: ${r.stdout}`);
      }
      assert.deepEqual(readdirSync(dir).sort(), [l.base]);
      assertStandaloneResult(t, dir, l.base, format, expected, scratch, 'scenario A');
    });

    await t.test('B: out of order, refusals on the way, recovery with reparent --ignore-id-mismatch', async (t) => {
      const dir = freshCopy(t, work, l, 'B');

      // The oldest checkpoint is merged first, and the admin keeps its file "just in case".
      // c2 (which depended on c1) is re-pointed at the base, and still reads as before.
      const m1 = ok(dir, ['merge', l.c1, '--keep']);
      assert.match(m1.stdout, /re-pointed at .*base\.\w+: .*c2\./, m1.stdout);
      assert.ok(existsSync(join(dir, l.c1)), '--keep should keep c1');
      const viaC3 = JSON.parse(ok(dir, ['chain', l.c3, '--json']).stdout) as { layers: Array<{ path: string }> };
      assert.deepEqual(viaC3.layers.map((x) => x.path.replace(/^.*\//, '')), [l.c3, l.c2, l.base]);
      assert.equal(sha256File(readRaw(dir, l.c3, scratch, 'b1.img')), expected, 'after merging c1 out of order, c3 no longer reads as before');
      assert.equal(sha256File(readRaw(dir, l.c2, scratch, 'b1c2.img')), stateSha[2], 'after merging c1, c2 no longer reads as the state it froze');
      // The kept c1 still reads as the state it froze: the base now holds that state, and c1 on top of it changes nothing.
      assert.equal(sha256File(readRaw(dir, l.c1, scratch, 'b1c1.img')), stateSha[1], 'the kept c1 no longer reads as the state it froze');

      // The kept c1 is now a second child of the base, so scan sees a branch and plans conversions of
      // both leaves. Its newest leaf must still be c3, the VM's current state: the kept c1 is an old state.
      await t.test('scan after merge --keep still names c3 as the newest leaf', () => {
        const scanRun = dc(dir, ['scan', dir, '--json']);
        assert.equal(scanRun.status, 0, show(scanRun));
        const report = JSON.parse(scanRun.stdout) as ScanPlanJson;
        assert.equal(report.trees.length, 1, scanRun.stdout);
        const tree = report.trees[0]!;
        assert.equal(tree.nodes.length, 4, scanRun.stdout);
        const leaves = JSON.stringify(tree.leaves.map((x) => ({ path: x.path, mtime: x.mtime, newest: x.newest })), null, 1);
        assert.equal(tree.newestLeaf, join(dir, l.c3), `scan takes the kept ${l.c1} for the newest state; leaves: ${leaves}`);
        const plan = report.plan[0]!;
        assert.equal(plan.action, 'convert', plan.notes.join('\n'));
        assert.ok(plan.result?.includes('c3-standalone'), `the plan's result should hold c3's state: ${plan.commands.join('\n')}`);
      });

      // Now merging c2 into the base would change the base under the kept c1: refused, naming c1.
      refused(dir, ['merge', l.c2], 'HAS_DEPENDENTS', [l.c1, 'depend']);
      // The admin discards the kept file: its state is in the base already.
      rmSync(join(dir, l.c1));

      // The base is lost and restored from an exported backup (same content, new identity):
      // the chain is broken, and everything that opens c3 says why.
      const backup = tempDir(t, `${format}-B-backup`);
      ok(dir, ['convert', l.base, join(backup, l.base), '-O', format]);
      rmSync(join(dir, l.base));
      copyFileSync(join(backup, l.base), join(dir, l.base));
      refused(dir, ['chain', l.c3], 'PARENT_MISMATCH', [l.base]);
      refused(dir, ['read', l.c3, '--length', '512'], 'PARENT_MISMATCH', [l.base]);
      refused(dir, ['merge', l.c3], 'PARENT_MISMATCH', [l.base]);
      refused(dir, ['merge', l.c2], 'PARENT_MISMATCH', [l.base]);
      // Re-attaching c2 to the restored base is refused until the admin says the content is the same.
      refused(dir, ['reparent', l.c2, l.base], 'PARENT_MISMATCH', [l.base, '--ignore-id-mismatch']);
      const rp = ok(dir, ['reparent', l.c2, l.base, '--ignore-id-mismatch']);
      assert.match(rp.stdout, /identity mismatch accepted/, rp.stdout);
      assert.equal(sha256File(readRaw(dir, l.c3, scratch, 'b2.img')), expected, 'after reparent --ignore-id-mismatch, c3 does not read as before');
      assert.equal(dc(dir, ['check', l.c2]).status, 0, 'check c2 after reparent');
      if (requireOracle(t, 'pyvhdi')) {
        assert.equal(pyvhdiSha256(join(dir, l.c3), [l.c2, l.base].map((f) => join(dir, f))), expected, 'pyvhdi reads the repaired chain differently');
      }

      // The rest is merged; the base alone holds everything.
      ok(dir, ['merge', l.c3]);
      ok(dir, ['merge', l.c2]);
      assert.deepEqual(readdirSync(dir).sort(), [l.base]);
      assertStandaloneResult(t, dir, l.base, format, expected, scratch, 'scenario B');
    });

    await t.test('C: renamed and moved files; scan rebuilds the tree by identity and its plan, run as printed, ends with one disk', (t) => {
      // In place, as in the field: the old names lead nowhere (no copy elsewhere still has them).
      const dir = work;
      mkdirSync(join(dir, 'moved'));
      const renamed = { base: join(dir, 'disk-a.bin'), c1: join(dir, 'x.dat'), c2: join(dir, 'moved', 'y.img'), c3: join(dir, 'z.data') };
      renameSync(join(dir, l.base), renamed.base);
      renameSync(join(dir, l.c1), renamed.c1);
      renameSync(join(dir, l.c2), renamed.c2);
      renameSync(join(dir, l.c3), renamed.c3);
      // The stored paths lead nowhere now.
      refused(dir, ['chain', renamed.c3], 'PARENT_NOT_FOUND', []);

      const scanRun = dc(dir, ['scan', dir, '--json']);
      // Stale links (found by identity, not by path) are consistent: exit 0.
      assert.equal(scanRun.status, 0, `scan: ${show(scanRun)}`);
      const report = JSON.parse(scanRun.stdout) as ScanPlanJson;
      assert.equal(report.summary.disks, 4, scanRun.stdout);
      assert.equal(report.summary.consistent, true, scanRun.stdout);
      assert.equal(report.trees.length, 1, `one tree expected: ${scanRun.stdout}`);
      const tree = report.trees[0]!;
      assert.equal(tree.complete, true);
      assert.equal(tree.root, renamed.base);
      assert.equal(tree.nodes.length, 4);
      const parentOf = new Map(tree.nodes.map((n) => [n.path, n.parent]));
      assert.equal(parentOf.get(renamed.base), null);
      assert.equal(parentOf.get(renamed.c1), renamed.base);
      assert.equal(parentOf.get(renamed.c2), renamed.c1);
      assert.equal(parentOf.get(renamed.c3), renamed.c2);
      assert.equal(tree.newestLeaf, renamed.c3);
      assert.deepEqual(tree.leaves.map((x) => x.chain), [[renamed.c3, renamed.c2, renamed.c1, renamed.base]]);
      assert.equal(report.orphans.length, 0, scanRun.stdout);
      assert.equal(report.identityMismatches.length, 0, scanRun.stdout);
      assert.deepEqual(report.staleLinks.map((s) => [s.child, s.parent]).sort(), [
        [renamed.c2, renamed.c1],
        [renamed.c1, renamed.base],
        [renamed.c3, renamed.c2],
      ].sort());

      assert.equal(report.plan.length, 1);
      const plan = report.plan[0]!;
      assert.equal(plan.action, 'merge', plan.notes.join('\n'));
      assert.equal(plan.result, renamed.base);
      assert.equal(plan.commands.length, plan.steps.length);
      assert.deepEqual(plan.steps.map((s) => s.args[0]), ['reparent', 'reparent', 'reparent', 'merge', 'merge', 'merge'], plan.commands.join('\n'));

      // Run the plan exactly as printed, with `diskchain` on the PATH.
      const bin = tempDir(t, `${format}-C-bin`);
      writeFileSync(join(bin, 'diskchain'), `#!/bin/sh\nexec "${process.execPath}" "${MAIN}" "$@"\n`);
      chmodSync(join(bin, 'diskchain'), 0o755);
      const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` };
      for (const command of plan.commands) {
        try {
          execSync(command, { cwd: scratch, env, shell: '/bin/sh', stdio: 'pipe' });
        } catch (e) {
          const err = e as { status?: number; stdout?: Buffer; stderr?: Buffer };
          assert.fail(`plan command failed (exit ${err.status}): ${command}\n${err.stdout?.toString() ?? ''}${err.stderr?.toString() ?? ''}`);
        }
      }
      for (const gone of [renamed.c1, renamed.c2, renamed.c3]) assert.ok(!existsSync(gone), `${gone} should have been merged and removed`);
      assertStandaloneResult(t, dir, renamed.base, format, expected, scratch, 'scenario C');

      // A second scan sees one standalone disk and nothing to do.
      const again = JSON.parse(ok(dir, ['scan', dir, '--json']).stdout) as ScanPlanJson;
      assert.equal(again.summary.disks, 1);
      assert.equal(again.summary.consistent, true);
      assert.deepEqual(again.plan.map((p) => p.steps.length), [0]);
    });
  });
}
