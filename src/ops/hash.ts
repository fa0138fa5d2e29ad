import { createHash } from 'node:crypto';
import { throwIfAborted } from '../io/errors.js';
import type { DiskChain } from '../chain/disk-chain.js';
import { COPY_CHUNK as CHUNK } from './convert.js';
import type { LongOperationOptions } from './progress.js';

/** SHA-256 of the whole virtual disk as read through the chain, streamed a chunk at a time. */
export async function hashChain(chain: DiskChain, options: LongOperationOptions = {}): Promise<string> {
  const hash = createHash('sha256');
  const buf = new Uint8Array(CHUNK);
  const size = chain.virtualSize;
  for (let at = 0; at < size; at += CHUNK) {
    throwIfAborted(options.signal);
    const part = buf.subarray(0, Math.min(CHUNK, size - at));
    await chain.read(part, at);
    hash.update(part);
    options.onProgress?.(at + part.length, size);
  }
  return hash.digest('hex');
}
