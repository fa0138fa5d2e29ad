import { throwIfAborted } from './errors.js';
/**
 * A random-access store of bytes: a file or a memory buffer.
 * Offsets are plain numbers (safe integers; files are well below 2^53 bytes).
 * `read` either fills the whole buffer or throws TRUNCATED: a short read is corruption.
 */
export interface ByteSource {
  readonly name: string;
  readonly readOnly: boolean;
  size(): Promise<number>;
  read(target: Uint8Array, offset: number): Promise<void>;
  /** Reads what exists; returns the count (may be short at end of file). */
  readAvailable(target: Uint8Array, offset: number): Promise<number>;
  write(data: Uint8Array, offset: number): Promise<void>;
  /** Optional gathered write: `parts` laid end to end from `offset`, in one call where the store allows. */
  writeParts?(parts: readonly Uint8Array[], offset: number): Promise<void>;
  /** Sets the file length (growing leaves a hole that reads as zeros). */
  truncate(length: number): Promise<void>;
  /** Makes every completed write durable. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

const ZERO_CHUNK = 4 * 1024 * 1024;

/**
 * Writes `length` zero bytes at `offset`, so they are allocated (the VHDX log; a fixed disk's data
 * area, fully allocated as Hyper-V makes it). 4 MiB at a time, checking `signal` and reporting
 * progress between chunks; memory stays at one chunk.
 */
export async function writeZeros(
  source: ByteSource,
  offset: number,
  length: number,
  options: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
): Promise<void> {
  const chunk = new Uint8Array(Math.min(length, ZERO_CHUNK));
  for (let done = 0; done < length; ) {
    throwIfAborted(options.signal);
    const n = Math.min(chunk.length, length - done);
    await source.write(chunk.subarray(0, n), offset + done);
    done += n;
    options.onProgress?.(done, length);
  }
}

/** Writes `parts` end to end from `offset`: one gathered write when the source offers it. */
export async function writeParts(source: ByteSource, parts: readonly Uint8Array[], offset: number): Promise<void> {
  if (parts.length === 1) return source.write(parts[0]!, offset);
  if (source.writeParts) return source.writeParts(parts, offset);
  let at = offset;
  for (const p of parts) {
    await source.write(p, at);
    at += p.length;
  }
}

/**
 * Waits for every one of `reads` (started together, into parts of one buffer) to settle, then throws
 * the first failure: no read still lands in the caller's buffer once this has returned or thrown.
 */
export async function settleReads(reads: readonly Promise<void>[]): Promise<void> {
  const failed = (await Promise.allSettled(reads)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
