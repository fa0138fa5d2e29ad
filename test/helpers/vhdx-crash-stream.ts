import { randomBytesFrom, Rng } from './vhdx-util.js';

/** One step of the crash writer's seeded stream. */
export type CrashOp = { kind: 'write'; offset: number; length: number; dataSeed: number; zero: boolean } | { kind: 'flush' };

export interface CrashGeometry {
  virtualSize: number;
  logicalSectorSize: number;
  blockSize: number;
}

/**
 * The deterministic stream a crash writer performs for `seed`: sector-aligned writes (mostly small,
 * some spanning blocks, some all-zero, some at the last sector) with a flush every few writes.
 */
export function crashStream(seed: number, g: CrashGeometry, count: number): CrashOp[] {
  const rng = new Rng(seed);
  const lss = g.logicalSectorSize;
  const sectors = g.virtualSize / lss;
  const ops: CrashOp[] = [];
  for (let i = 0; i < count; i++) {
    if (i > 0 && rng.int(6) === 0) {
      ops.push({ kind: 'flush' });
      continue;
    }
    const shape = rng.int(10);
    let first: number;
    let n: number;
    if (shape === 0) {
      // Straddle a block boundary.
      const boundary = (1 + rng.int(Math.max(1, Math.floor(g.virtualSize / g.blockSize) - 1))) * (g.blockSize / lss);
      first = Math.max(0, boundary - 1 - rng.int(16));
      n = 2 + rng.int(64);
    } else if (shape === 1) {
      first = sectors - 1 - rng.int(4);
      n = 1 + rng.int(4);
    } else if (shape === 2) {
      first = rng.int(sectors);
      n = 1 + rng.int((2 * g.blockSize) / lss);
    } else {
      first = rng.int(sectors);
      n = 1 + rng.int(32);
    }
    first = Math.min(first, sectors - 1);
    n = Math.max(1, Math.min(n, sectors - first));
    ops.push({ kind: 'write', offset: first * lss, length: n * lss, dataSeed: rng.u32(), zero: rng.int(8) === 0 });
  }
  return ops;
}

export function opData(op: Extract<CrashOp, { kind: 'write' }>): Uint8Array {
  return op.zero ? new Uint8Array(op.length) : randomBytesFrom(op.dataSeed, op.length);
}
