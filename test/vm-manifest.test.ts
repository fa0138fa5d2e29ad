/**
 * Damaged and hostile vm.json: every refusal is MANIFEST_INVALID (exit 3) naming the JSON path of
 * what is wrong, never a crash or a stack trace, and no file of the VM folder changes. Hand-made cases
 * (paths escaping the folder, cycles, Now frozen by a checkpoint, a newer version, ...) through the
 * CLI, then random mutations of a real manifest (fast-check) through the library.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import fc from 'fast-check';
import { createVm, openVm } from '../src/api/vm.js';
import { isDiskchainError } from '../src/io/errors.js';
import { CLI as MAIN } from './helpers/cli.js';

const MIB = 1024 * 1024;

/** Every file under the folder: vm.json by its hash, the others by size, inode and modification time (the lock's owner file left out). */
function snapshot(folder: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.name.startsWith('vm.lock')) continue;
      if (e.isDirectory()) walk(p);
      else if (e.isSymbolicLink()) out.set(relative(folder, p), 'symlink');
      else if (e.name.endsWith('.json')) out.set(relative(folder, p), createHash('sha256').update(readFileSync(p)).digest('hex'));
      else {
        const s = statSync(p);
        out.set(relative(folder, p), `${s.size} ${s.ino} ${s.mtimeMs}`);
      }
    }
  };
  walk(folder);
  return out;
}

async function makeVm(folder: string): Promise<void> {
  await createVm(folder, { newDisks: [{ size: 2 * MIB }, { size: 2 * MIB, format: 'vhd' }] });
  const vm = await openVm(folder);
  await vm.checkpoint({ name: 'one' });
  await vm.checkpoint({ name: 'two' });
  await vm.close();
}

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const CASES: Array<[string, (m: Json) => Json | string, RegExp]> = [
  ['not JSON', () => '{"kind": "diskchain.vm", ', /^\$$/],
  ['an array', () => '[]', /^\$$/],
  ['a newer version', (m) => ({ ...m, version: 2 }), /^\$\.version$/],
  ['an unknown key', (m) => ({ ...m, colour: 'red' }), /^\$\.colour$/],
  ['a missing key', (m) => (delete m.now, m), /^\$\.now$/],
  ['a name of 101 characters', (m) => ((m.checkpoints[0].name = 'x'.repeat(101)), m), /^\$\.checkpoints\[0\]\.name$/],
  ['an empty name', (m) => ((m.checkpoints[1].name = ''), m), /^\$\.checkpoints\[1\]\.name$/],
  ['a path with ..', (m) => ((m.nodes[0].file = '../outside.vhdx'), m), /^\$\.nodes\[0\]\.file$/],
  ['an absolute path', (m) => ((m.nodes[1].file = '/etc/passwd'), m), /^\$\.nodes\[1\]\.file$/],
  ['a backslash path', (m) => ((m.checkpoints[0].config = 'Snapshots\\..\\..\\x'), m), /^\$\.checkpoints\[0\]\.config$/],
  ['a parent that does not exist', (m) => ((m.checkpoints[1].parent = '00000000-0000-4000-8000-000000000000'), m), /^\$\.checkpoints\[1\]\.parent$/],
  ['a checkpoint cycle', (m) => ((m.checkpoints[0].parent = m.checkpoints[1].id), m), /^\$\.checkpoints\[0\]\.(parent|disks\.disk0)$/],
  ['a node cycle', (m) => ((m.nodes[0].parent = m.nodes[m.nodes.length - 1].id), m), /^\$\.nodes\[\d+\]\.parent$/],
  ['Now frozen by a checkpoint', (m) => ((m.now.disks.disk0 = m.checkpoints[1].disks.disk0), m), /^\$\.now\.disks\.disk0$/],
  ['a node of another disk', (m) => ((m.now.disks.disk1 = m.now.disks.disk0), m), /^\$\.now\.disks\.disk1$/],
  ['a duplicate checkpoint id', (m) => ((m.checkpoints[1].id = m.checkpoints[0].id), m), /^\$\.checkpoints\[1\]\.id$/],
  ['a generation of -1', (m) => ((m.generation = -1), m), /^\$\.generation$/],
  ['a string for a number', (m) => ((m.config.cpus = '4'), m), /^\$\.config\.cpus$/],
  ['too many disks', (m) => ((m.disks = Array.from({ length: 65 }, (_, i) => ({ id: `d${i}`, stem: `d${i}`, format: 'vhdx' }))), m), /^\$\.disks$/],
];

test('hand-made damaged manifests: MANIFEST_INVALID with the JSON path, exit 3, nothing changed', { timeout: 300_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'dc-vm-manifest-'));
  try {
    const folder = join(root, 'vm');
    await makeVm(folder);
    const original = readFileSync(join(folder, 'vm.json'), 'utf8');
    for (const [i, [label, damage, path]] of CASES.entries()) {
      const damaged = damage(JSON.parse(original) as Json);
      writeFileSync(join(folder, 'vm.json'), typeof damaged === 'string' ? damaged : JSON.stringify(damaged, null, 2));
      const before = snapshot(folder);
      // A command that reads and one that would change the VM (the reading one for the first cases only: each spawn costs).
      for (const args of [...(i < 4 ? [['checkpoint', 'list', folder, '--json']] : []), ['checkpoint', 'create', folder, '--json']]) {
        const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' });
        assert.equal(r.status, 3, `${label}, ${args[1]}: exit ${r.status}: ${r.stdout}${r.stderr}`);
        assert.doesNotMatch(r.stderr, /internal error|\n\s+at /, `${label}: a stack trace`);
        const error = (JSON.parse(r.stdout) as { error: { code: string; path: string; message: string } }).error;
        assert.equal(error.code, 'MANIFEST_INVALID', label);
        assert.match(error.path, path, `${label}: the JSON path (${error.message})`);
      }
      assert.deepEqual(snapshot(folder), before, `${label}: files changed`);
    }
    // A node file that is a symlink leading out of the folder is refused when it is used.
    writeFileSync(join(folder, 'vm.json'), original);
    const m = JSON.parse(original) as Json;
    const leaf = join(folder, m.nodes.find((n: Json) => n.id === m.now.disks.disk0).file);
    const outside = join(root, 'outside.vhdx');
    writeFileSync(outside, readFileSync(leaf));
    unlinkSync(leaf);
    symlinkSync(outside, leaf);
    const before = snapshot(folder);
    const r = spawnSync(process.execPath, [MAIN, 'checkpoint', 'create', folder, '--json'], { encoding: 'utf8' });
    assert.equal(JSON.parse(r.stdout).error.code, 'PATH_NOT_ALLOWED', r.stdout);
    assert.equal(r.status, 4);
    assert.deepEqual(snapshot(folder), before, 'symlink out: files changed');
    assert.equal(statSync(outside).size, readFileSync(outside).length);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

/** Every path into a JSON value, for picking where to damage it. */
function paths(value: unknown, at: Array<string | number> = []): Array<Array<string | number>> {
  const out: Array<Array<string | number>> = [at];
  if (Array.isArray(value)) value.forEach((v, i) => out.push(...paths(v, [...at, i])));
  else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) out.push(...paths(v, [...at, k]));
  return out;
}

test('random damage to a real manifest: refused with a JSON path, or accepted as valid; never a crash, never a change when refused', { timeout: 300_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'dc-vm-manifest-fuzz-'));
  try {
    const folder = join(root, 'vm');
    await makeVm(folder);
    const original = JSON.parse(readFileSync(join(folder, 'vm.json'), 'utf8')) as Json;
    const all = paths(original).filter((p) => p.length > 0);
    let refused = 0;
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(fc.nat(all.length - 1), fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.constant('__delete__'), fc.constantFrom('../x', '/abs', '', 'x'.repeat(200), -1, 1e300, null)), async (which, value) => {
        const m = structuredClone(original);
        const p = all[which]!;
        let target: Json = m;
        for (const k of p.slice(0, -1)) target = target[k as string];
        const key = p[p.length - 1]!;
        if (value === '__delete__') Array.isArray(target) ? target.splice(key as number, 1) : delete target[key as string];
        else target[key as string] = value;
        writeFileSync(join(folder, 'vm.json'), JSON.stringify(m));
        const before = snapshot(folder);
        try {
          const vm = await openVm(folder, { lock: 'none' });
          await vm.describe({ reclaim: false }).catch((e: unknown) => {
            // A manifest valid in itself may still disagree with the files: a typed error, no crash.
            if (!isDiskchainError(e)) throw e;
          });
          await vm.close();
          accepted++;
        } catch (e) {
          if (!isDiskchainError(e)) throw e;
          assert.equal(e.code, 'MANIFEST_INVALID', e.message);
          assert.match(String(e.details.path), /^\$/);
          refused++;
        }
        assert.deepEqual(snapshot(folder), before);
      }),
      { numRuns: 200 },
    );
    assert.ok(refused > 120, `refused ${refused}, accepted ${accepted}`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
