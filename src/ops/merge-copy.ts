import { throwIfAborted } from '../io/errors.js';
import type { DiskChain } from '../chain/disk-chain.js';
import type { VirtualDisk } from '../formats/types.js';
import type { LongOperationOptions } from './progress.js';
import { extentsToCopy, type CopyExtent } from './space.js';

const PIECE = 8 * 1024 * 1024;
/** The journal's progress mark moves (after a flush of the target) at most this often. */
const CHECKPOINT_EVERY = 256 * 1024 * 1024;

/**
 * Writes into `target` every range the layers of `upper` hold, from virtual offset `from` on.
 * `checkpoint(upTo)` is called after each CHECKPOINT_EVERY bytes and at the end: it must make the
 * target durable and record that everything below `upTo` is copied. Returns the bytes written.
 */
export async function copyUpperInto(
  upper: DiskChain,
  target: VirtualDisk,
  from: number,
  options: LongOperationOptions,
  checkpointBytes: number | undefined,
  checkpoint: (upTo: number) => Promise<void>,
): Promise<number> {
  const size = upper.virtualSize;
  const buf = new Uint8Array(PIECE);
  const zeros = new Uint8Array(PIECE);
  let written = 0;
  let sinceCheckpoint = 0;
  for await (const extent of extentsToCopy(upper, target, options.signal)) {
    const end = extent.offset + extent.length;
    if (end <= from) continue;
    const clipped: CopyExtent = { ...extent, offset: Math.max(extent.offset, from), length: end - Math.max(extent.offset, from) };
    for (let at = clipped.offset; at < end; at += PIECE) {
      throwIfAborted(options.signal);
      const n = Math.min(PIECE, end - at);
      if (clipped.state === 'data') {
        const part = buf.subarray(0, n);
        await upper.read(part, at);
        await target.write(part, at);
      } else await target.write(zeros.subarray(0, n), at);
      written += n;
      sinceCheckpoint += n;
      options.onProgress?.(at + n, size);
      if (sinceCheckpoint >= (checkpointBytes ?? CHECKPOINT_EVERY)) {
        await checkpoint(at + n);
        sinceCheckpoint = 0;
      }
    }
  }
  await checkpoint(size);
  options.onProgress?.(size, size);
  return written;
}
