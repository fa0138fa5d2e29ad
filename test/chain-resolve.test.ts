/**
 * Parent resolution: stale paths found by identity in --search-path folders, case-insensitive names,
 * confinement to the allowed folders (symlinks included), cycles, self-parents, symlink aliases,
 * and error messages that list every path tried.
 */
import { mkdirSync, renameSync, symlinkSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createChild, createDisk } from '../src/api/create.js';
import { linkTo } from '../src/chain/link-paths.js';
import { openChain, openDisk } from '../src/chain/open-chain.js';
import { isDiskchainError } from '../src/io/errors.js';
import { MIB, tempDir } from './helpers/vhdx-util.js';

async function rejectsWith(p: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isDiskchainError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

async function makePair(dir: string, format: 'vhdx' | 'vhd', parentDir = dir): Promise<{ base: string; child: string }> {
  mkdirSync(dir, { recursive: true });
  mkdirSync(parentDir, { recursive: true });
  const base = join(parentDir, `base.${format}`);
  const child = join(dir, `child.a${format}`);
  await (await createDisk(base, format, { diskType: 'dynamic', virtualSize: 8 * MIB })).close();
  await (await createChild(child, base)).close();
  return { base, child };
}

async function depth(leaf: string, options = {}): Promise<{ n: number; foundBy: string | undefined }> {
  const chain = await openChain(leaf, options);
  try {
    return { n: chain.layers.length, foundBy: chain.links[0]?.foundBy };
  } finally {
    await chain.close();
  }
}

for (const format of ['vhdx', 'vhd'] as const) {
  test(`${format}: a renamed parent is found by identity in a search folder, and only there`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const { base, child } = await makePair(join(dir, 'vm'), format);
      const moved = join(dir, 'elsewhere', 'renamed.bin');
      mkdirSync(join(dir, 'elsewhere'));
      renameSync(base, moved);
      await rejectsWith(openChain(child), 'PARENT_NOT_FOUND', /relative_path|W2ru|W2ku/);
      await rejectsWith(openChain(child), 'PARENT_NOT_FOUND', new RegExp(`${join(dir, 'vm', `base.${format}`)} \\(missing\\)`));
      // A decoy with the right name but another identity is skipped by the search.
      await (await createDisk(join(dir, 'elsewhere', `base.${format}`), format, { diskType: 'dynamic', virtualSize: 8 * MIB })).close();
      assert.deepEqual(await depth(child, { searchPaths: [join(dir, 'elsewhere')] }), { n: 2, foundBy: 'identity' });
    } finally {
      cleanup();
    }
  });

  test(`${format}: names differing only in case are matched (Windows paths ignore case)`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const { base, child } = await makePair(join(dir, 'vm'), format);
      renameSync(base, join(dir, 'vm', `BASE.${format.toUpperCase()}`));
      assert.deepEqual(await depth(child), { n: 2, foundBy: 'path' });
    } finally {
      cleanup();
    }
  });

  test(`${format}: a parent outside the allowed folders is refused, also through a symlink, unless its folder is allowed`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const { child } = await makePair(join(dir, 'vm'), format, join(dir, 'store'));
      await rejectsWith(openChain(child), 'PATH_NOT_ALLOWED', /outside the allowed folders.*--search-path/);
      assert.equal((await depth(child, { searchPaths: [join(dir, 'store')] })).n, 2);
      assert.equal((await depth(child, { allowedFolders: null })).n, 2);
      // A symlink beside the child that leads outside is no way around the rule.
      const { child: child2, base: base2 } = await makePair(join(dir, 'vm2'), format, join(dir, 'store2'));
      symlinkSync(base2, join(dir, 'vm2', `base.${format}`));
      await rejectsWith(openChain(child2), 'PATH_NOT_ALLOWED', /store2/);
    } finally {
      cleanup();
    }
  });

  test(`${format}: self-parents, symlink aliases and cycles are refused`, async () => {
    const { dir, cleanup } = tempDir();
    try {
      const { base, child } = await makePair(join(dir, 'vm'), format);
      // A symlink alias: the parent's name now leads back to the child itself.
      unlinkSync(base);
      symlinkSync(child, base);
      await rejectsWith(openChain(child), 'CHAIN_CYCLE', /already in the chain/);
      unlinkSync(base);
      // A self-parent written into the file.
      const self = await openDisk(child, { writable: true });
      await self.setParent!(linkTo(child, child, self.identity()));
      await self.close();
      await rejectsWith(openChain(child), 'CHAIN_CYCLE', /already in the chain/);
      // A two-disk cycle: a -> b -> a, identities consistent.
      const { base: b2, child: a } = await makePair(join(dir, 'cyc'), format);
      const b = join(dir, 'cyc', `b.a${format}`);
      await (await createChild(b, a)).close();
      const da = await openDisk(a, { writable: true });
      const db = await openDisk(b);
      await da.setParent!(linkTo(a, b, db.identity()));
      await da.close();
      await db.close();
      await rejectsWith(openChain(b), 'CHAIN_CYCLE', /already in the chain/);
      assert.ok(b2);
    } finally {
      cleanup();
    }
  });
}

test('a VHDX child refuses a VHD file standing where its parent should be', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const { base, child } = await makePair(join(dir, 'vm'), 'vhdx');
    unlinkSync(base);
    await (await createDisk(base, 'vhd', { diskType: 'dynamic', virtualSize: 8 * MIB })).close();
    await rejectsWith(openChain(child), 'PARENT_MISMATCH', /VHDX child cannot have a VHD parent/);
  } finally {
    cleanup();
  }
});
