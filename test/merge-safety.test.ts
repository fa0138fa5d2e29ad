/**
 * Merge, rebase and reparent safety: a full disk mid-merge, stale journals, sibling dependents,
 * --verify, --keep, refusals with clear messages, and no file changed by a refused command.
 */
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createChild } from '../src/api/create.js';
import { openChain, openDisk, withChain } from '../src/chain/open-chain.js';
import { merge } from '../src/ops/merge.js';
import { rebase } from '../src/ops/rebase.js';
import { reparent } from '../src/ops/reparent.js';
import { measureChain } from '../src/ops/measure.js';
import { buildChain, chainHash, restore } from './helpers/merge-chain.js';
import { fullDiskAfter } from './helpers/full-disk.js';
import { rejectsWith } from './helpers/rejects.js';
import { writeWithoutLocks } from './helpers/foreign-write.js';
import { MIB, fileSha256, randomBytesFrom, tempDir } from './helpers/vhdx-util.js';

function shas(files: string[]): string[] {
  return files.map((f) => (existsSync(f) ? fileSha256(f) : 'missing'));
}

for (const format of ['vhdx', 'vhd'] as const) {
  test(`${format}: a full disk stops the merge cleanly; nothing is lost and the same merge finishes once there is room`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const [base, c1, , c3] = await buildChain(join(dir, 'w'), format, 11);
      const expected = await chainHash(c3!);
      const expectedC1 = await chainHash(c1!);
      const m = await withChain(c1!, {}, (chain) => measureChain(chain));
      assert.ok(m.mergeIntoParent && m.mergeIntoParent.bytesNeeded > 2 * MIB, `the merge must grow the base (forecast ${m.mergeIntoParent?.bytesNeeded})`);
      await rejectsWith(merge(c1!, { wrapTargetSource: fullDiskAfter(2 * MIB), checkpointBytes: MIB }), 'NO_SPACE', /no space/);
      assert.equal(await chainHash(c3!), expected, 'the leaf reads the same after the failure');
      assert.equal(await chainHash(c1!), expectedC1);
      assert.ok(readdirSync(join(dir, 'w')).some((n) => n.endsWith('.diskchain-merge.json')), 'the journal stays for the resume');
      await rejectsWith(merge(c1!, { wrapTargetSource: fullDiskAfter(1 * MIB), checkpointBytes: MIB }), 'NO_SPACE', /no space/);
      assert.equal(await chainHash(c3!), expected);
      const done = await merge(c1!, { verify: false });
      assert.equal(done.resumed, true);
      assert.equal(await chainHash(base!), expectedC1, 'base now holds what c1 showed');
      assert.equal(await chainHash(c3!), expected, 'and the leaf (c2 handed over to base) still reads the same');
      assert.equal(existsSync(c1!), false);
    } finally {
      cleanup();
    }
  });

  test(`${format}: a journal whose chain changed is refused, not trusted`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const [, c1, c2] = await buildChain(join(dir, 'w'), format, 12);
      await rejectsWith(merge(c2!, { wrapTargetSource: fullDiskAfter(0), checkpointBytes: MIB }), 'NO_SPACE', /no space/);
      // The pending journal reserves the child: a writable open is refused, saying what to run.
      await rejectsWith(openDisk(c2!, { writable: true }), 'LOCKED', /merge of .*c2\.a.* is pending.*diskchain merge .*c2.*--abandon/);
      // A writer that takes no lock writes into the child anyway: its identity changes (VHDX) or its content does.
      await writeWithoutLocks(c2!, randomBytesFrom(5, 4096), 0);
      // The resume sees it (VHDX: the DataWriteGuid; VHD: the fingerprint) and refuses, changing nothing.
      const before = shas([c1!, c2!]);
      await rejectsWith(merge(c2!), 'JOURNAL_MISMATCH', format === 'vhdx' ? /cannot go on: .*c2\.avhdx now has DataWriteGuid .*written or replaced.*--abandon/ : /cannot go on: .*c2\.avhd was changed after the merge started.*--abandon/);
      assert.deepEqual(shas([c1!, c2!]), before, 'a refused resume changes nothing');
      const j = readdirSync(join(dir, 'w')).find((n) => n.endsWith('.diskchain-merge.json'))!;
      writeFileSync(join(dir, 'w', j), '{"operation":"merge","version":1,"target":5}');
      await rejectsWith(merge(c2!), 'JOURNAL_MISMATCH', /not a merge journal/);
    } finally {
      cleanup();
    }
  });

  test(`${format}: merge refuses when a sibling depends on the target or a layer in between, and changes nothing`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const files = await buildChain(join(dir, 'w'), format, 13);
      const [base, c1, c2, c3] = files;
      const sibling = join(dir, 'w', `sibling.a${format}`);
      await (await createChild(sibling, base!)).close();
      const before = shas([...files, sibling]);
      await rejectsWith(merge(c1!), 'HAS_DEPENDENTS', /sibling\.a.*child of .*base.*silently corrupted/);
      await rejectsWith(merge(c3!, { into: base! }), 'HAS_DEPENDENTS', /sibling/);
      const other = join(dir, 'w', `branch.a${format}`);
      await (await createChild(other, c1!)).close();
      await rejectsWith(merge(c3!, { into: c1! }), 'HAS_DEPENDENTS', /branch\.a.*child of .*c1/);
      assert.deepEqual(shas([...files, sibling]), before);
      // Merging the leaf into its parent is fine: nothing else depends on c2.
      const expected = await chainHash(c3!);
      const r = await merge(c3!, { verify: true, keep: true });
      assert.equal(r.verify?.identical, true);
      assert.equal(r.verify?.before, expected);
      assert.equal(await chainHash(c2!), expected);
      assert.ok(existsSync(c3!), '--keep keeps the merged file');
      assert.equal(await chainHash(c3!), expected, 'and the kept child still reads the same through the merged parent');
    } finally {
      cleanup();
    }
  });

  test(`${format}: merge into a named ancestor, rebase --onto and --standalone keep the content`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const pristine = await buildChain(join(dir, 'p'), format, 14);
      const expected = await chainHash(pristine[3]!);
      let [base, , , c3] = restore(pristine, join(dir, 'a'));
      const r = await merge(c3!, { into: base!, verify: true });
      assert.deepEqual(r.merged.map((p) => p.slice(p.lastIndexOf('/') + 1)), [`c3.a${format}`, `c2.a${format}`, `c1.a${format}`]);
      assert.equal(r.verify?.identical, true);
      assert.equal(await chainHash(base!), expected);
      assert.deepEqual(readdirSync(join(dir, 'a')), [`base.${format}`]);

      [base, , , c3] = restore(pristine, join(dir, 'b'));
      const rb = await rebase(c3!, { onto: base! });
      assert.equal(rb.leftBehind.length, 2);
      const chain = await openChain(c3!);
      assert.equal(chain.layers.length, 2);
      await chain.close();
      assert.equal(await chainHash(c3!), expected);

      [, , , c3] = restore(pristine, join(dir, 'c'));
      await rebase(c3!, { standalone: true });
      const alone = await openDisk(c3!);
      assert.equal(alone.parent, undefined);
      assert.equal(alone.diskType, 'dynamic');
      await alone.close();
      assert.equal(await chainHash(c3!), expected);
      const [, c1c, c2c] = restore(pristine, join(dir, 'd'));
      await rejectsWith(rebase(c1c!, { standalone: true }), 'HAS_DEPENDENTS', /c2\.a/);
      assert.ok(c2c);
    } finally {
      cleanup();
    }
  });

  test(`${format}: reparent refuses another size, sector size, format, a cycle, and a mismatch without the flag`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const [base, c1, c2] = await buildChain(join(dir, 'w'), format, 15);
      const otherFormat = format === 'vhdx' ? 'vhd' : 'vhdx';
      const [oBase] = await buildChain(join(dir, 'o'), otherFormat, 16);
      const [small] = await buildChain(join(dir, 's'), format, 17, 32 * MIB);
      const before = shas([base!, c1!, c2!]);
      await rejectsWith(reparent(c2!, oBase!, { ignoreIdMismatch: true }), 'PARENT_MISMATCH', /format differs/);
      await rejectsWith(reparent(c2!, small!, { ignoreIdMismatch: true }), 'PARENT_MISMATCH', /virtual size differs/);
      await rejectsWith(reparent(c1!, c2!, { ignoreIdMismatch: true }), 'CHAIN_CYCLE', /cycle/);
      await rejectsWith(reparent(c2!, base!), 'PARENT_MISMATCH', /ignore-id-mismatch/);
      await rejectsWith(reparent(base!, c1!), 'INVALID_ARGUMENT', /not a differencing/);
      assert.deepEqual(shas([base!, c1!, c2!]), before, 'refusals change nothing');
      const r = await reparent(c2!, base!, { ignoreIdMismatch: true });
      assert.equal(r.identityMatched, false);
      const chain = await openChain(c2!);
      assert.equal(chain.layers.length, 2);
      assert.equal(chain.links[0]!.identityMatches, true, 'the new identity was recorded');
      await chain.close();
    } finally {
      cleanup();
    }
  });
}
