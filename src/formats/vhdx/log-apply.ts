import { writeZeros, type ByteSource } from '../../io/byte-source.js';
import { corrupt } from '../../io/errors.js';
import type { VhdxLayout } from './layout.js';
import { LOG_SECTOR } from './log-entry.js';
import type { ReplayPlan } from './log-replay.js';
import { MIB } from './metadata-items.js';

/**
 * Bounds on a log replay (§2.3.3) from the file's and the disk's real sizes, so that a hostile log
 * cannot make an open write or grow without limit (a zero descriptor may name 2^47 bytes):
 *
 *   bound    = the furthest a VHDX of this layout can legitimately reach: the larger of the file's
 *              size and the end of its log, metadata and BAT regions, plus room for every payload
 *              block and every sector bitmap block the disk's size allows.
 *   checked  every descriptor's bytes and the head entry's LastFileOffset lie within the bound,
 *            against the layout as it is after the replay (read through an overlay, nothing written).
 *   applied  zero descriptors write only below the file's size before the replay, and over pages
 *            an earlier data descriptor of the same replay placed beyond it; the rest of the file
 *            past that size is the zeros the extension to LastFileOffset (or the data) gives.
 *            So the bytes written are at most the file's old size plus the log's data sectors.
 */
export function replayBound(layout: VhdxLayout, fileSize: number): number {
  const { logOffset, logLength } = layout.current.header;
  const regionsEnd = Math.max(logOffset + logLength, ...layout.regions.map((r) => r.fileOffset + r.length));
  const b = layout.batLayout;
  return Math.max(fileSize, regionsEnd) + b.payloadBlocks * layout.fileParameters.blockSize + b.sectorBitmapBlocks * MIB;
}

/** CORRUPT (nothing written) when the plan reaches beyond `bound`. */
export function assertReplayWithin(plan: ReplayPlan, bound: number, file: string, logOffset: number): void {
  if (plan.minimumFileSize > bound) {
    throw corrupt(`log LastFileOffset ${plan.minimumFileSize} is beyond the ${bound} bytes this disk's file can reach`, file, logOffset);
  }
  for (const w of plan.writes) {
    if (w.offset + w.length > bound) {
      throw corrupt(`log descriptor targets bytes ${w.offset}..${w.offset + w.length}, beyond the ${bound} bytes this disk's file can reach`, file, logOffset);
    }
  }
}

/** Writes a checked plan into `source`, whose size before the replay is `oldSize` (see the top of this file). */
export async function applyReplay(source: ByteSource, plan: ReplayPlan, oldSize: number): Promise<void> {
  const end = plan.writes.reduce((m, w) => Math.max(m, w.offset + w.length), plan.minimumFileSize);
  if (end > oldSize) await source.truncate(end);
  /** Start offsets of the pages data descriptors wrote beyond oldSize, sorted. */
  const beyond: number[] = [];
  for (const w of plan.writes) {
    if (w.data) {
      await source.write(w.data, w.offset);
      if (w.offset + w.length > oldSize) insertSorted(beyond, w.offset);
      continue;
    }
    const below = Math.min(w.offset + w.length, oldSize) - w.offset;
    if (below > 0) await writeZeros(source, w.offset, below);
    // Past oldSize only the pages this replay wrote hold data; zero those, each at most once.
    let i = lowerBound(beyond, Math.max(w.offset, oldSize) - PAGE + 1);
    while (i < beyond.length && beyond[i]! < w.offset + w.length) {
      const at = beyond[i]!;
      const from = Math.max(at, w.offset, oldSize);
      const to = Math.min(at + PAGE, w.offset + w.length);
      if (from < to) await writeZeros(source, from, to - from);
      if (from === at && to === at + PAGE) beyond.splice(i, 1);
      else i++;
    }
  }
}

/** Data descriptors write one 4 KiB log sector each (§2.3.1.3). */
const PAGE = LOG_SECTOR;

function lowerBound(sorted: number[], value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function insertSorted(sorted: number[], value: number): void {
  const i = lowerBound(sorted, value);
  if (sorted[i] !== value) sorted.splice(i, 0, value);
}
