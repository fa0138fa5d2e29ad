/**
 * Disks and workloads for the power-cut tests: a folder holding a leaf (dynamic, or differencing over
 * a parent full of data), and a seeded stream of guest writes that allocates new blocks, writes into
 * blocks already there (and, differencing, into blocks partly present, so sector bitmaps change),
 * crosses block boundaries, and flushes now and then.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createChild, createDisk } from '../../src/api/create.js';
import { openDisk } from '../../src/chain/open-disk.js';
import type { FormatName } from '../../src/formats/types.js';
import { GuestLog, readChain } from './power-cut-disk.js';
import { PowerCutRecorder, type FlushFilter } from './power-cut-recorder.js';
import { randomBytesFrom, Rng } from './vhdx-util.js';

export interface DiskScene {
  name: string;
  format: Extract<FormatName, 'vhdx' | 'vhd'>;
  differencing: boolean;
  virtualSize: number;
  blockSize: number;
  logicalSectorSize: number;
}

const KIB = 1024;
const MIB = 1024 * KIB;

export const SCENES: DiskScene[] = [
  { name: 'dynamic VHDX', format: 'vhdx', differencing: false, virtualSize: 6 * MIB, blockSize: MIB, logicalSectorSize: 512 },
  { name: 'differencing VHDX (4 KiB sectors)', format: 'vhdx', differencing: true, virtualSize: 6 * MIB, blockSize: MIB, logicalSectorSize: 4096 },
  { name: 'dynamic VHD', format: 'vhd', differencing: false, virtualSize: 2 * MIB, blockSize: 64 * KIB, logicalSectorSize: 512 },
  { name: 'differencing VHD', format: 'vhd', differencing: true, virtualSize: 2 * MIB, blockSize: 64 * KIB, logicalSectorSize: 512 },
];

export const sceneFile = (s: DiskScene, role: 'leaf' | 'parent'): string =>
  role === 'parent' ? `parent.${s.format}` : `${role}.${s.differencing ? `a${s.format}` : s.format}`;

/** Makes the scene's disks in `dir`: the parent (written over most of its blocks) and the leaf. Returns the leaf's path. */
export async function buildScene(dir: string, s: DiskScene, seed: number): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const leaf = join(dir, sceneFile(s, 'leaf'));
  const base = { virtualSize: s.virtualSize, blockSize: s.blockSize, ...(s.format === 'vhdx' ? { logicalSectorSize: s.logicalSectorSize } : {}) };
  if (!s.differencing) {
    await (await createDisk(leaf, s.format, { diskType: 'dynamic', ...base })).close();
    return leaf;
  }
  const parentPath = join(dir, sceneFile(s, 'parent'));
  const parent = await createDisk(parentPath, s.format, { diskType: 'dynamic', ...base });
  const rng = new Rng(seed);
  for (let at = 0; at < s.virtualSize; at += s.blockSize) {
    if (rng.int(5) === 0) continue;
    await parent.write(randomBytesFrom(rng.u32(), s.blockSize), at);
  }
  await parent.close();
  await (await createChild(leaf, parentPath, { blockSize: s.blockSize })).close();
  return leaf;
}

/**
 * The seeded guest stream: `rounds` rounds of a few writes and a flush; the last round ends with
 * close() (which flushes). Writes are whole logical sectors; some fill a block, some straddle two.
 */
export async function guestStream(log: GuestLog, s: DiskScene, seed: number, rounds: number): Promise<void> {
  const rng = new Rng(seed);
  const lss = s.logicalSectorSize;
  const sectors = s.virtualSize / lss;
  const perBlock = s.blockSize / lss;
  for (let r = 0; r < rounds; r++) {
    const writes = 1 + rng.int(3);
    for (let i = 0; i < writes; i++) {
      const shape = rng.int(6);
      let first: number;
      let n: number;
      if (shape === 0) {
        first = rng.int(sectors / perBlock) * perBlock;
        n = perBlock;
      } else if (shape === 1) {
        const boundary = (1 + rng.int(sectors / perBlock - 1)) * perBlock;
        first = boundary - 1 - rng.int(3);
        n = 2 + rng.int(6);
      } else {
        first = rng.int(sectors);
        n = 1 + rng.int(Math.max(1, Math.min(16, (16 * 1024) / lss)));
      }
      n = Math.min(n, sectors - first);
      await log.write(randomBytesFrom(rng.u32(), n * lss), first * lss);
    }
    if (r < rounds - 1) await log.flush();
  }
  await log.close();
}

/** Builds the scene, records the guest stream into its leaf (opened writable like any writer), and returns what the checks need. */
export async function recordWrites(dir: string, s: DiskScene, seed: number, rounds: number, dropFlush?: FlushFilter): Promise<{ rec: PowerCutRecorder; leaf: string; before: Uint8Array }> {
  const leaf = await buildScene(dir, s, seed);
  const before = await readChain(leaf);
  const rec = PowerCutRecorder.start(dir, dropFlush);
  try {
    const disk = await openDisk(leaf, { writable: true });
    await guestStream(new GuestLog(rec, disk), s, seed + 1, rounds);
  } finally {
    rec.stop();
  }
  return { rec, leaf, before };
}
