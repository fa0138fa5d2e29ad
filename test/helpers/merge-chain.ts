/** Builds the chains the merge tests work on: base <- c1 <- c2 <- c3, each layer with its own seeded writes. */
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { createChild, createDisk } from '../../src/api/create.js';
import { openChain } from '../../src/chain/open-chain.js';
import { hashChain } from '../../src/ops/hash.js';
import type { FormatName } from '../../src/formats/types.js';
import { MIB, Rng, randomBytesFrom } from './vhdx-util.js';

export const LAYERS = ['base', 'c1', 'c2', 'c3'] as const;

export function layerPath(dir: string, format: 'vhdx' | 'vhd', name: string): string {
  return join(dir, name === 'base' ? `base.${format}` : `${name}.a${format}`);
}

/**
 * Writes a base and three checkpoints. Each layer gets a few seeded writes: whole blocks, partial
 * blocks (sector bitmaps) and runs of zeros over its parent's data.
 */
export async function buildChain(dir: string, format: 'vhdx' | 'vhd', seed: number, virtualSize = 48 * MIB): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(seed);
  const paths = LAYERS.map((n) => layerPath(dir, format, n));
  const blockSize = format === 'vhdx' ? MIB : 2 * MIB;
  for (const [i, path] of paths.entries()) {
    const disk = i === 0 ? await createDisk(path, format as FormatName, { diskType: 'dynamic', virtualSize, blockSize }) : await createChild(path, paths[i - 1]!, { blockSize });
    try {
      for (let w = 0; w < 12; w++) {
        const sectors = 1 + rng.int(2 * 4096);
        const offset = rng.int(virtualSize / 512 - sectors) * 512;
        const data = w % 5 === 4 ? new Uint8Array(sectors * 512) : randomBytesFrom(seed * 100 + i * 16 + w, sectors * 512);
        await disk.write(data, offset);
      }
      await disk.flush();
    } finally {
      await disk.close();
    }
  }
  return paths;
}

export async function chainHash(leaf: string): Promise<string> {
  const chain = await openChain(leaf);
  try {
    return await hashChain(chain);
  } finally {
    await chain.close();
  }
}

/** Copies the pristine files of a chain into a fresh folder `to` (same names). */
export function restore(from: string[], to: string): string[] {
  rmSync(to, { recursive: true, force: true });
  mkdirSync(to, { recursive: true });
  return from.map((p) => {
    const dest = join(to, basename(p));
    copyFileSync(p, dest);
    return dest;
  });
}
