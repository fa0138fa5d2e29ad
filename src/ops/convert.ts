import { isAllZero } from '../io/binary.js';
import { throwIfAborted } from '../io/errors.js';
import type { DiskChain } from '../chain/disk-chain.js';
import type { VirtualDisk } from '../formats/types.js';
import type { LongOperationOptions } from './progress.js';

/**
 * Bytes read and written at a time: bounded memory whatever the disk size. Measured on tmpfs: a raw
 * target is fastest with 2 MiB chunks (the buffers stay in the CPU cache); VHD and VHDX targets with
 * 8 MiB, since each write that allocates costs a round of flushes.
 */
export const COPY_CHUNK = 8 * 1024 * 1024;
const RAW_COPY_CHUNK = 2 * 1024 * 1024;
const READ_AHEAD = 3;
const WRITES_IN_FLIGHT = 2;

export interface CopyResult {
  bytesWritten: number;
  bytesSkipped: number;
}

/**
 * Copies what the chain reads into `target` (a new, empty disk of the same size).
 * Ranges that are absent or zero in every layer are skipped, and so are chunks that read as zeros,
 * so a sparse source gives a sparse target.
 */
export async function copyChainInto(chain: DiskChain, target: VirtualDisk, options: LongOperationOptions = {}): Promise<CopyResult> {
  const size = chain.virtualSize;
  // Chunks are whole target blocks, so zero runs can be skipped at the target's allocation unit.
  const chunkBytes = target.concurrentWrites ? RAW_COPY_CHUNK : COPY_CHUNK;
  const unit = Math.min(Math.max(target.blockSize, 1024 * 1024), chunkBytes);
  const chunkSize = Math.floor(chunkBytes / unit) * unit;
  let bytesWritten = 0;
  // Reads run READ_AHEAD chunks ahead of the writes, which are issued in order; a target whose
  // writes may overlap (raw) gets WRITES_IN_FLIGHT of them at once. Each chunk in flight owns a buffer.
  const writesInFlight = target.concurrentWrites ? WRITES_IN_FLIGHT : 1;
  const buffers = Array.from({ length: READ_AHEAD + writesInFlight }, () => new Uint8Array(chunkSize));
  const chunks = Math.ceil(size / chunkSize);
  const reads: Array<Promise<Uint8Array | undefined>> = [];
  const writes: Array<Promise<void>> = [];
  const startRead = (j: number): void => {
    if (j >= chunks || reads[j] !== undefined) return;
    const bufferFree = j >= buffers.length ? writes[j - buffers.length]! : Promise.resolve();
    reads[j] = bufferFree.then(async () => {
      const offset = j * chunkSize;
      const n = Math.min(chunkSize, size - offset);
      const extents = await chain.map(offset, n);
      if (!extents.some((e) => e.state === 'data')) return undefined;
      const part = buffers[j % buffers.length]!.subarray(0, n);
      await chain.read(part, offset);
      return part;
    });
    reads[j].catch(() => undefined);
  };
  try {
    for (let i = 0; i < chunks; i++) {
      throwIfAborted(options.signal);
      for (let j = i; j < i + READ_AHEAD; j++) startRead(j);
      const part = await reads[i]!;
      if (i >= writesInFlight) await writes[i - writesInFlight];
      const offset = i * chunkSize;
      const n = Math.min(chunkSize, size - offset);
      writes[i] = (part ? writeNonZeroRuns(target, part, offset, unit) : Promise.resolve(0)).then((written) => {
        bytesWritten += written;
        options.onProgress?.(offset + n, size);
      });
      writes[i]!.catch(() => undefined);
      if (writesInFlight === 1) await writes[i];
      delete reads[i];
    }
    await Promise.all(writes.slice(-writesInFlight));
  } catch (e) {
    await Promise.allSettled([...reads.filter(Boolean), ...writes.filter(Boolean)]);
    throw e;
  }
  const bytesSkipped = size - bytesWritten;
  await target.flush();
  return { bytesWritten, bytesSkipped };
}

/** Writes the runs of `unit`-sized pieces of `data` that hold a non-zero byte, each run in one call. */
async function writeNonZeroRuns(target: VirtualDisk, data: Uint8Array, offset: number, unit: number): Promise<number> {
  let written = 0;
  let runStart = -1;
  for (let at = 0; ; at = Math.min(at + unit, data.length)) {
    const zero = at === data.length || isAllZero(data.subarray(at, Math.min(at + unit, data.length)));
    if (!zero && runStart < 0) runStart = at;
    if (zero && runStart >= 0) {
      await target.write(data.subarray(runStart, at), offset + runStart);
      written += at - runStart;
      runStart = -1;
    }
    if (at === data.length) return written;
  }
}
