import assert from 'node:assert/strict';
import { mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { createChild } from '../src/chain/create-child.js';
import { createDisk, openDisk } from '../src/chain/open-disk.js';
import { openChain } from '../src/chain/open-chain.js';
import type { FormatName } from '../src/formats/types.js';
import { pyvhdiSha256, requireOracle } from './helpers/oracles.js';
import { MIB, randomBytesFrom, sha256, tempDir } from './helpers/vhdx-util.js';

/**
 * Parent locators written on Linux (docs/formats/vhdx.md and vhd.md, "Parent paths written on
 * Linux"): the relative path only; no POSIX path in absolute_win32_path or W2ku, where Hyper-V would
 * take "/srv/a.vhdx" for \srv\a.vhdx on its current drive. A Windows path given by the caller is kept.
 */

const EXT: Record<'vhd' | 'vhdx', [string, string]> = { vhdx: ['base.vhdx', 'snap.avhdx'], vhd: ['base.vhd', 'snap.avhd'] };

for (const format of ['vhdx', 'vhd'] as const) {
  test(`${format}: a checkpoint made on Linux records only the relative path, and the pair still opens after moving together`, async (t) => {
    const { dir, cleanup } = tempDir('diskchain-locators-');
    try {
      const folder = join(dir, 'vm');
      mkdirSync(join(folder, 'Snapshots'), { recursive: true });
      const [baseName, snapName] = EXT[format];
      const base = join(folder, baseName);
      const snap = join(folder, 'Snapshots', snapName);
      const b = await createDisk(base, format as FormatName, { diskType: 'dynamic', virtualSize: 4 * MIB });
      await b.write(randomBytesFrom(1, MIB), 0);
      await b.close();
      const c = await createChild(snap, base);
      await c.write(randomBytesFrom(2, 4096), 2 * MIB);
      const locators = c.parent!.locators.map((l) => [l.kind, l.key, l.path]);
      assert.deepEqual(locators, [['relative', format === 'vhdx' ? 'relative_path' : 'W2ru', `..\\${baseName}`]]);
      const details = c.details() as { parentUnicodeName?: string };
      if (format === 'vhd') assert.equal(details.parentUnicodeName, baseName, 'Parent Unicode Name is the file name (spec), not a POSIX path');
      await c.close();
      const again = await openDisk(snap);
      assert.deepEqual(again.parent!.locators.map((l) => [l.kind, l.key, l.path]), locators, 'what was written is what is read back');
      await again.close();

      const before = await chainSha(snap, folder);
      const moved = join(dir, 'moved-vm');
      renameSync(folder, moved);
      assert.equal(await chainSha(join(moved, 'Snapshots', snapName), moved), before, 'found through the relative path after the move');
      if (format === 'vhd' && requireOracle(t, 'pyvhdi')) {
        assert.equal(pyvhdiSha256(join(moved, 'Snapshots', snapName), [join(moved, baseName)]), before, 'libvhdi reads the chain the same');
      }
    } finally {
      cleanup();
    }
  });

  test(`${format}: a Windows absolute path given for the parent is written as the absolute locator`, async () => {
    const { dir, cleanup } = tempDir('diskchain-locators-');
    try {
      const [baseName, snapName] = EXT[format];
      const base = join(dir, baseName);
      await (await createDisk(base, format as FormatName, { diskType: 'dynamic', virtualSize: 4 * MIB })).close();
      const p = await openDisk(base);
      const identity = p.identity();
      await p.close();
      const windowsPath = `C:\\ProgramData\\Microsoft\\Windows\\Virtual Hard Disks\\${baseName}`;
      const c = await createDisk(join(dir, snapName), format as FormatName, {
        diskType: 'differencing', virtualSize: 4 * MIB,
        parent: { identity, virtualSize: 4 * MIB, logicalSectorSize: 512, physicalSectorSize: 512, relativePath: `.\\${baseName}`, absolutePath: windowsPath },
      });
      const keys = c.parent!.locators.map((l) => [l.kind, l.path]).sort();
      assert.deepEqual(keys, [['absolute', windowsPath], ['relative', `.\\${baseName}`]]);
      await c.close();
    } finally {
      cleanup();
    }
  });
}

/** The chain's content; `vmFolder` is where its parents may be (the VM folder, as the CLI's --search-path). */
async function chainSha(path: string, vmFolder: string): Promise<string> {
  const chain = await openChain(path, { allowedFolders: [vmFolder] });
  try {
    const out = new Uint8Array(chain.virtualSize);
    await chain.read(out, 0);
    return sha256(out);
  } finally {
    await chain.close();
  }
}
