import { throwIfAborted } from '../io/errors.js';
import type { DiskChain } from '../chain/disk-chain.js';
import type { VirtualDisk } from '../formats/types.js';
import type { LongOperationOptions } from './progress.js';
import { extentsToCopy, type CopyExtent } from './space.js';

/** Bytes per read and write; two pieces are in memory at once (one read ahead of the write). */
const PIECE = 16 * 1024 * 1024;
/** The journal's progress mark moves (after a flush of the target) at most this often. */
const CHECKPOINT_EVERY = 256 * 1024 * 1024;

/** The extents from `from` on, cut into pieces of at most PIECE bytes. */
async function* pieces(upper: DiskChain, target: VirtualDisk, from: number, signal?: AbortSignal): AsyncGenerator<CopyExtent> {
  for await (const extent of extentsToCopy(upper, target, signal)) {
    const end = extent.offset + extent.length;
    for (let at = Math.max(extent.offset, from); at < end; at += PIECE) yield { state: extent.state, offset: at, length: Math.min(PIECE, end - at) };
  }
}

/**
 * Writes into `target` every range the layers of `upper` hold, from virtual offset `from` on; the
 * next piece is read while the current one is written. `checkpoint(upTo)` is called after each
 * `checkpointBytes` (default 256 MiB) and at the end: it must make the target durable and record
 * that everything below `upTo` is copied. Returns the bytes written.
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
  const buffers = [new Uint8Array(PIECE), new Uint8Array(PIECE)];
  const zeros = new Uint8Array(PIECE);
  const load = async (p: CopyExtent, i: number): Promise<{ piece: CopyExtent; data: Uint8Array }> => {
    if (p.state === 'zero') return { piece: p, data: zeros.subarray(0, p.length) };
    const data = buffers[i % 2]!.subarray(0, p.length);
    await upper.read(data, p.offset);
    return { piece: p, data };
  };
  let written = 0;
  let sinceCheckpoint = 0;
  const source = pieces(upper, target, from, options.signal);
  let i = 0;
  let next = await source.next();
  let pending = next.done ? undefined : load(next.value, i++);
  while (pending) {
    throwIfAborted(options.signal);
    const { piece, data } = await pending;
    next = await source.next();
    pending = next.done ? undefined : load(next.value, i++);
    pending?.catch(() => undefined);
    await target.write(data, piece.offset);
    written += piece.length;
    sinceCheckpoint += piece.length;
    options.onProgress?.(piece.offset + piece.length, size);
    if (sinceCheckpoint >= (checkpointBytes ?? CHECKPOINT_EVERY)) {
      await checkpoint(piece.offset + piece.length);
      sinceCheckpoint = 0;
    }
  }
  await checkpoint(size);
  options.onProgress?.(size, size);
  return written;
}
