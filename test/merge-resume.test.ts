/**
 * A merge resume that cannot be misdirected (ops/merge.ts): a journal left in each phase with a
 * same-named foreign file put in place is refused and the foreign file left untouched; --verify stops
 * before anything is destroyed; a VHD child written between interruption and resume (by qemu-io, which
 * knows nothing of the journal) is detected; a new command line is followed or refused; info, check
 * and scan report the pending merge; --abandon ends it in every phase, with no stuck state after.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createChild, createDisk } from '../src/api/create.js';
import { openDisk } from '../src/chain/open-chain.js';
import type { ByteSource } from '../src/io/byte-source.js';
import { isDiskchainError } from '../src/io/errors.js';
import { merge } from '../src/ops/merge.js';
import { abandonMerge } from '../src/ops/merge-abandon.js';
import type { MergePhase } from '../src/ops/merge-journal.js';
import { buildChain, chainHash } from './helpers/merge-chain.js';
import { fullDiskAfter, intercepting } from './helpers/full-disk.js';
import { rejectsWith } from './helpers/rejects.js';
import { requireOracle } from './helpers/oracles.js';
import { CLI } from './helpers/serve-cli.js';
import { MIB, fileSha256, randomBytesFrom, tempDir } from './helpers/vhdx-util.js';

const FORMATS = ['vhdx', 'vhd'] as const;

const shas = (files: string[]): string[] => files.map((f) => (existsSync(f) ? fileSha256(f) : 'missing'));
const journals = (dir: string): string[] => readdirSync(dir).filter((n) => n.endsWith('.diskchain-merge.json'));

class Stop extends Error {}

/** Leaves a merge of `child` pending in `phase`: stopped as the phase starts (copy: part way through). */
async function interruptIn(child: string, phase: MergePhase, options: { keep?: boolean; verify?: boolean } = {}): Promise<void> {
  if (phase === 'copy') {
    await rejectsWith(merge(child, { ...options, wrapTargetSource: fullDiskAfter(2 * MIB), checkpointBytes: MIB }), 'NO_SPACE', /no space/);
    return;
  }
  await assert.rejects(
    merge(child, {
      ...options,
      onPhase: (p) => {
        if (p === phase) throw new Stop(`stopped at ${phase}`);
      },
    }),
    Stop,
  );
}

/** Puts a new disk of the same format in place of `path` (a careless admin's "same name, other file"). */
async function replaceWithForeign(path: string, format: 'vhdx' | 'vhd', seed: number): Promise<void> {
  const tmp = `${path}.foreign`;
  const disk = await createDisk(tmp, format, { diskType: 'dynamic', virtualSize: 48 * MIB });
  await disk.write(randomBytesFrom(seed, 64 * 1024), 0);
  await disk.close();
  renameSync(tmp, path);
}

for (const format of FORMATS) {
  for (const phase of ['copy', 'handover', 'remove'] as const) {
    for (const role of ['child', 'target', 'dependent'] as const) {
      test(`${format}: a journal left in ${phase}, the ${role} replaced by a same-named foreign disk: refused, the foreign disk untouched`, async () => {
        const { dir, cleanup } = tempDir();
        try {
          const w = join(dir, 'w');
          const [base, c1, c2, c3] = await buildChain(w, format, 40 + phase.length);
          await interruptIn(c2!, phase);
          assert.equal(journals(w).length, 1);
          const victim = { child: c2!, target: c1!, dependent: c3! }[role];
          await replaceWithForeign(victim, format, 77);
          const before = shas([base!, c1!, c2!, c3!]);
          await assert.rejects(merge(c2!), (e: unknown) => {
            assert.ok(isDiskchainError(e), String(e));
            assert.ok(e.code === 'JOURNAL_MISMATCH', `${e.code}: ${e.message}`);
            assert.match(e.message, /pending merge of .*c2\.a.* cannot go on: .*Nothing was changed.*--abandon/);
            return true;
          });
          assert.deepEqual(shas([base!, c1!, c2!, c3!]), before, 'nothing changed or deleted, the foreign file least of all');
          assert.equal(journals(w).length, 1, 'the journal stays: the merge is still pending');
        } finally {
          cleanup();
        }
      });
    }
  }

  test(`${format}: --verify finds a difference before anything is handed over or removed; everything stays in place; --abandon ends it`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const w = join(dir, 'w');
      const [, , c2, c3] = await buildChain(w, format, 51);
      const expectedLeaf = await chainHash(c3!);
      const expectedChild = await chainHash(c2!);
      // The target's writes are damaged on their way (a bad cable, a bug): one byte of the first data piece flips.
      let flipped = false;
      const damaging = (inner: ByteSource): ByteSource =>
        intercepting(inner, {
          write: async (d, o) => {
            if (flipped || d.length < 1024 * 1024 || !d.some((b) => b !== 0)) return inner.write(d, o);
            flipped = true;
            const bad = Uint8Array.from(d);
            bad[4096] = bad[4096]! ^ 0xff;
            return inner.write(bad, o);
          },
        });
      const leafBefore = shas([c3!]);
      await rejectsWith(merge(c2!, { verify: true, wrapTargetSource: damaging }), 'VERIFY_MISMATCH', /does not read as .*c2\.a.* did.*stopped before anything was handed over or removed/);
      assert.ok(flipped, 'the damage was injected');
      assert.deepEqual(shas([c3!]), leafBefore, 'the merged child\'s child is untouched (not handed over)');
      assert.ok(existsSync(c2!), 'the merged child is still there');
      assert.equal(await chainHash(c2!), expectedChild, 'the merged child reads as before');
      assert.equal(await chainHash(c3!), expectedLeaf);
      assert.equal(journals(w).length, 1);
      // Running it again verifies again, and refuses again.
      await rejectsWith(merge(c2!), 'VERIFY_MISMATCH', /does not read as/);
      const r = await abandonMerge(c2!);
      assert.equal(r.phase, 'verify');
      assert.match(r.notRolledBack.join('\n'), /c1\.a.*no longer reads as it did.*c2\.a.* still reads as before/);
      assert.equal(journals(w).length, 0);
      assert.equal(await chainHash(c3!), expectedLeaf, 'after abandoning, the leaf still reads as before');
    } finally {
      cleanup();
    }
  });

  test(`${format}: --abandon in each phase leaves a chain that reads as before and that a new merge completes (no stuck state)`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      for (const phase of ['copy', 'handover', 'remove'] as const) {
        const w = join(dir, phase);
        const [, c1, c2, c3] = await buildChain(w, format, 60 + phase.length);
        const expectedLeaf = await chainHash(c3!);
        const expectedChild = await chainHash(c2!);
        await interruptIn(c2!, phase);
        const r = await abandonMerge(c2!);
        assert.equal(r.phase, phase);
        assert.equal(journals(w).length, 0, 'the journal is gone');
        assert.deepEqual(readdirSync(w).filter((n) => n.includes('diskchain-merge')), [], 'and no pointer is left');
        assert.equal(await chainHash(c3!), expectedLeaf, `${phase}: the leaf reads as before`);
        if (phase === 'handover') assert.match(r.rolledBack.join('\n'), /c3\.a.* (had not been re-pointed yet|names .*c2\.a.* as its parent again)/);
        if (phase === 'remove') assert.match(r.notRolledBack.join('\n'), /holds the merged content/);
        if (phase !== 'remove') {
          assert.equal(await chainHash(c2!), expectedChild);
          // The way out is not a dead end: the same merge, started afresh, completes.
          const done = await merge(c2!, { verify: true });
          assert.equal(done.resumed, false);
          assert.equal(done.verify?.identical, true);
          assert.equal(await chainHash(c1!), expectedChild);
          assert.equal(await chainHash(c3!), expectedLeaf);
        }
        // Writes are allowed again.
        await (await openDisk(c1!, { writable: true })).close();
      }
      await rejectsWith(abandonMerge(join(dir, 'copy', `c1.a${format}`)), 'INVALID_ARGUMENT', /no merge of .* is pending/);
    } finally {
      cleanup();
    }
  });

  test(`${format}: after --abandon, the target itself merges into its parent (its child names it by the link the merge gave it)`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      for (const phase of ['copy', 'handover'] as const) {
        const [, c1, c2, c3] = await buildChain(join(dir, phase), format, 70 + phase.length);
        const expectedLeaf = await chainHash(c3!);
        const expectedChild = await chainHash(c2!);
        await interruptIn(c2!, phase);
        await abandonMerge(c2!);
        const done = await merge(c1!, { verify: true });
        assert.equal(done.verify?.identical, true);
        assert.equal(await chainHash(c2!), expectedChild, `${phase}: c2 reads as before through the merged base`);
        assert.equal(await chainHash(c3!), expectedLeaf);
        await merge(c3!);
        assert.equal(await chainHash(c2!), expectedLeaf, `${phase}: and the rest of the chain merges too`);
      }
    } finally {
      cleanup();
    }
  });

  test(`${format}: a resumed merge follows a new --keep, refuses a different --into or a --verify it cannot honour`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const w = join(dir, 'w');
      const [base, c1, c2, c3] = await buildChain(w, format, 70);
      const expectedLeaf = await chainHash(c3!);
      await interruptIn(c2!, 'copy');
      await rejectsWith(merge(c2!, { into: base! }), 'JOURNAL_MISMATCH', /--into .*base.* differs: a merge of .*c2\.a.* into .*c1\.a.* is pending \(phase copy.*diskchain merge .*c2.*--abandon/);
      await interruptIn(c2!, 'handover', { keep: true });
      await rejectsWith(merge(c2!, { verify: true }), 'JOURNAL_MISMATCH', /--verify cannot be honoured: .*pending \(phase handover/);
      const r = await merge(c2!);
      assert.equal(r.resumed, true);
      assert.deepEqual(r.removed, [], 'the journal\'s --keep holds when the new command line says nothing');
      assert.ok(existsSync(c2!));
      assert.equal(await chainHash(c3!), expectedLeaf);

      const v = join(dir, 'v');
      const [, d1, d2, d3] = await buildChain(v, format, 71);
      const expectedD = await chainHash(d3!);
      await interruptIn(d2!, 'copy', { keep: true });
      const done = await merge(d2!, { keep: false, verify: true });
      assert.equal(done.resumed, true);
      assert.deepEqual(done.removed, [d2!], 'a --keep given up before removal is followed');
      assert.equal(done.verify?.identical, true, '--verify asked for on resume during the copy is honoured');
      assert.equal(await chainHash(d3!), expectedD);
      void c1;
      void d1;
    } finally {
      cleanup();
    }
  });

  test(`${format}: a journal beside an ancestor in another folder is found from the child, reserves the child, and is reported by info, check and scan`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      // The child's folder B and, below it, the target's folder A (a parent below the child's folder needs no --search-path).
      const b = join(dir, 'B');
      const a = join(b, 'A');
      mkdirSync(a, { recursive: true });
      const base = join(a, `base.${format}`);
      await (await createDisk(base, format, { diskType: 'dynamic', virtualSize: 48 * MIB })).close();
      const child = join(b, `kid.a${format}`);
      const kid = await createChild(child, base);
      await kid.write(randomBytesFrom(3, 4 * MIB), 0);
      await kid.close();
      const grandchild = join(b, `grandkid.a${format}`);
      await (await createChild(grandchild, child)).close();
      const expected = await chainHash(grandchild);
      await interruptIn(child, 'copy');
      assert.equal(journals(a).length, 1, 'the journal lies beside the target, in A');
      // From the child's folder: writes are refused, info, check and scan say what is pending and what to run.
      await rejectsWith(openDisk(child, { writable: true }), 'LOCKED', /merge of .*kid\.a.* is pending/);
      await rejectsWith(openDisk(grandchild, { writable: true }), 'LOCKED', /merge of .*kid\.a.* is pending/);
      const info = spawnSync(process.execPath, [CLI, 'info', child], { encoding: 'utf8' });
      assert.equal(info.status, 0, info.stderr);
      assert.match(info.stdout, /pending merge +a merge of .*kid\.a.* into .*base\.\w+ is pending.*diskchain merge .*kid.*--abandon/);
      const check = spawnSync(process.execPath, [CLI, 'check', child], { encoding: 'utf8' });
      assert.equal(check.status, 1, check.stderr);
      assert.match(check.stdout, /MERGE_PENDING: .*diskchain merge .*kid\.a/);
      const scan = spawnSync(process.execPath, [CLI, 'scan', a, b], { encoding: 'utf8' });
      assert.equal(scan.status, 1, scan.stderr);
      assert.match(scan.stdout, /pending merges.*\n.*diskchain merge .*kid\.a/);
      // A different target is refused; the plain command, run in B, finds the journal in A and finishes.
      await rejectsWith(merge(child, { into: grandchild }), 'JOURNAL_MISMATCH', /differs/);
      const r = await merge(child);
      assert.equal(r.resumed, true);
      assert.equal(await chainHash(grandchild), expected);
      assert.deepEqual([...readdirSync(a), ...readdirSync(b)].filter((n) => n.includes('diskchain-merge')), []);
    } finally {
      cleanup();
    }
  });
}

test('vhd: a child written by qemu-io between the interruption and the resume is detected; nothing is lost; abandon, then merge again', async (t) => {
  if (!requireOracle(t, 'qemu-io')) return;
  const { dir, cleanup } = tempDir();
  try {
    const w = join(dir, 'w');
    const [, c1, c2, c3] = await buildChain(w, 'vhd', 80);
    await interruptIn(c2!, 'copy');
    // QEMU knows nothing of the journal, and no diskchain holds the files: it writes below the saved progress.
    const q = spawnSync('qemu-io', ['-f', 'vpc', c2!, '-c', 'write -P 0x5a 0 64k'], { encoding: 'utf8' });
    assert.equal(q.status, 0, q.stderr);
    const after = await chainHash(c2!);
    const before = shas([c1!, c2!, c3!]);
    await rejectsWith(merge(c2!), 'JOURNAL_MISMATCH', /c2\.avhd was changed after the merge started/);
    assert.deepEqual(shas([c1!, c2!, c3!]), before, 'the refused resume changed nothing');
    assert.equal(await chainHash(c2!), after, 'the child still reads with QEMU\'s write');
    await abandonMerge(c2!);
    const done = await merge(c2!);
    assert.equal(done.resumed, false);
    assert.equal(await chainHash(c1!), after, 'the new merge carries QEMU\'s write into the target');
  } finally {
    cleanup();
  }
});
