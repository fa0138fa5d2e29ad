/**
 * kill -9 at every step boundary of every VM operation (the CLI run with DISKCHAIN_TEST_CRASH_AFTER=N
 * for N = 1, 2, ... until it finishes without dying; see src/checkpoint/test-points.ts). After each
 * kill:
 *   - read as it is (no recovery), the VM has the old tree or the new one, and every checkpoint and
 *     Now reads as that tree says;
 *   - the next command (`vm check --repair`) finishes or rolls back the interrupted operation: the
 *     tree is old or new, contents match, the journal is empty and `vm check` finds nothing.
 * A VM's "signature" is its tree by names with the sha256 of every disk of every checkpoint and Now.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { openVm } from '../src/api/vm.js';
import { dc, makeTemplate, recoverAndCheck, signature } from './helpers/vm-crash.js';
import { readWhole } from './helpers/vm-model.js';

/** Runs `args` (with VM at `{vm}`) killed at each boundary in turn; checks old-or-new and recovery. */
async function crashEverywhere(template: string, work: string, args: string[], label: string): Promise<number> {
  const fresh = (): string => {
    const vm = join(work, 'vm');
    rmSync(vm, { recursive: true, force: true });
    rmSync(join(work, 'export'), { recursive: true, force: true });
    cpSync(template, vm, { recursive: true });
    return vm;
  };
  const argv = (vm: string): string[] => args.map((a) => a.replace('{vm}', vm).replace('{export}', join(work, 'export')));
  const oldSig = await signature(template);
  const vm0 = fresh();
  const clean = dc(argv(vm0));
  assert.equal(clean.status, 0, `${label} without a crash: ${clean.stderr}`);
  const newSig = await signature(vm0);
  assert.notEqual(newSig, oldSig, `${label} changes the VM`);
  let points = 0;
  for (let n = 1; ; n++) {
    const vm = fresh();
    const t0 = Date.now();
    const r = dc(argv(vm), { DISKCHAIN_TEST_CRASH_AFTER: String(n) });
    const t1 = Date.now();
    if (r.signal !== 'SIGKILL') {
      assert.equal(r.status, 0, `${label}, boundary ${n}: ${r.stderr}`);
      break;
    }
    points++;
    const seen = await signature(vm);
    assert.ok(seen === oldSig || seen === newSig, `${label}, killed at boundary ${n}: the VM reads as neither the old nor the new tree:\n${seen}\n--- old:\n${oldSig}\n--- new:\n${newSig}`);
    const t2 = Date.now();
    await recoverAndCheck(vm, `${label}, boundary ${n}`);
    const t3 = Date.now();
    const after = await signature(vm);
    if (process.env.DISKCHAIN_CRASH_TIMES) console.error(`${label} ${n}: run ${t1 - t0} sig ${t2 - t1} recover ${t3 - t2} sig ${Date.now() - t3}`);
    assert.ok(after === oldSig || after === newSig, `${label}, boundary ${n}: after recovery the VM is neither old nor new:\n${after}`);
    if (seen === newSig) assert.equal(after, newSig, `${label}, boundary ${n}: a committed change was rolled back`);
    assert.deepEqual(readdirSync(join(vm, 'journal')), [], `${label}, boundary ${n}: records left`);
  }
  assert.ok(points >= 3, `${label}: only ${points} boundaries were reached`);
  return points;
}

test('kill -9 at every step boundary of every checkpoint operation: old or new tree, then recovered', { timeout: 900_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-crash-'));
  try {
    const template = join(work, 'template');
    await makeTemplate(template);
    const counts: Record<string, number> = {};
    const cases: Array<[string, string[]]> = [
      ['checkpoint create', ['checkpoint', 'create', '{vm}', '--name', 'C']],
      ['checkpoint apply --checkpoint-first', ['checkpoint', 'apply', '{vm}', 'A', '--checkpoint-first', 'S']],
      ['checkpoint apply (Now discarded)', ['checkpoint', 'apply', '{vm}', 'A']],
      ['checkpoint remove (middle: merge)', ['checkpoint', 'remove', '{vm}', 'B']],
      ['checkpoint remove --subtree', ['checkpoint', 'remove', '{vm}', 'A', '--subtree']],
      ['checkpoint rename', ['checkpoint', 'rename', '{vm}', 'B', 'B2']],
    ];
    for (const [label, args] of cases) counts[label] = await crashEverywhere(template, work, args, label);
    console.log(`boundaries killed at: ${JSON.stringify(counts)}`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

/** The group's boundaries that matter: before any decision, at the decision, between the members' commits. */
const GROUP_POINTS = ['checkpoint-create:recorded', 'checkpoint-create:action:2', 'group:decided', 'checkpoint-create:committed', 'checkpoint-create:finished'];

test('kill -9 during a group checkpoint: both VMs have it or neither', { timeout: 300_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-group-crash-'));
  try {
    const template = join(work, 'template');
    await makeTemplate(template);
    const outcomes: string[] = [];
    for (const [i, point] of GROUP_POINTS.entries()) {
      const a = join(work, 'a');
      const b = join(work, 'b');
      for (const f of [a, b]) {
        rmSync(f, { recursive: true, force: true });
        cpSync(template, f, { recursive: true });
      }
      const r = dc(['checkpoint', 'create', a, b, '--name', 'G'], { DISKCHAIN_TEST_CRASH_AT: point });
      assert.equal(r.signal, 'SIGKILL', `killed at ${point}`);
      // Recovery of either VM first must give the same answer for both.
      for (const f of i % 2 === 0 ? [a, b] : [b, a]) await recoverAndCheck(f, `group, ${point}`);
      const has = await Promise.all([a, b].map(async (f) => (await openVm(f, { lock: 'none' }).then(async (vm) => (await vm.close(), vm.manifest.checkpoints.some((c) => c.name === 'G'))))));
      assert.equal(has[0], has[1], `group checkpoint killed at ${point}: one VM has it, the other not`);
      for (const f of [a, b]) assert.deepEqual(readdirSync(join(f, 'journal')), []);
      outcomes.push(`${point}: ${has[0] ? 'committed' : 'rolled back'}`);
    }
    // Killed before the decision: none; at or after it: both.
    assert.deepEqual(outcomes.map((o) => o.endsWith('committed')), [false, false, true, true, true], outcomes.join('; '));
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('kill -9 during vm create --move: rolled back (the chain back where it was) or created', { timeout: 300_000 }, async () => {
  const work = mkdtempSync(join(tmpdir(), 'dc-vm-create-crash-'));
  try {
    const src = join(work, 'src');
    const seedVm = join(work, 'seed');
    await makeTemplate(seedVm);
    // A chain of three files (base <- A's layer <- B's layer) to adopt: B's checkpoint chain.
    const vm = await openVm(seedVm, { lock: 'none' });
    const b = vm.manifest.checkpoints.find((c) => c.name === 'B')!;
    const chainFiles: string[] = [];
    for (let at: string | null = b.disks.disk0!; at !== null; ) {
      const node = vm.manifest.nodes.find((x) => x.id === at)!;
      chainFiles.push(node.file);
      at = node.parent;
    }
    const expected = await readWhole(vm, 'disk0', b.id);
    await vm.close();
    let points = 0;
    for (let n = 1; ; n++) {
      rmSync(src, { recursive: true, force: true });
      rmSync(join(work, 'new'), { recursive: true, force: true });
      // Only the chain: the seed's other layers depend on its base, and a move would strand them (refused).
      for (const f of chainFiles) cpSync(join(seedVm, f), join(src, f.split('/')[1]!));
      const leaf = join(src, chainFiles[0]!.split('/')[1]!);
      const r = dc(['vm', 'create', join(work, 'new'), '--disk', leaf, '--move'], { DISKCHAIN_TEST_CRASH_AFTER: String(n) });
      if (r.signal !== 'SIGKILL') {
        assert.equal(r.status, 0, r.stderr);
        break;
      }
      points++;
      if (existsSync(join(work, 'new', 'vm.json'))) {
        await recoverAndCheck(join(work, 'new'), `vm create, boundary ${n}`);
      } else {
        // The next vm create on the folder rolls the interrupted one back first, then succeeds.
        const again = dc(['vm', 'create', join(work, 'new'), '--disk', leaf, '--move']);
        assert.equal(again.status, 0, `boundary ${n}: ${again.stderr}`);
      }
      const made = await openVm(join(work, 'new'), { lock: 'none' });
      try {
        assert.ok((await readWhole(made, 'disk0')).equals(expected), `boundary ${n}: the adopted chain reads differently`);
        assert.equal(made.manifest.nodes.length, chainFiles.length);
      } finally {
        await made.close();
      }
      assert.deepEqual(readdirSync(join(work, 'new', 'journal')), []);
    }
    assert.ok(points >= 5, `only ${points} boundaries`);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});
