import { DiskchainError } from '../io/errors.js';
import type { Extent, ExtentState } from './types.js';

/** Refuses (OUT_OF_RANGE) a range that is not whole integers inside a disk of `virtualSize` bytes. */
export function checkRange(path: string, virtualSize: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > virtualSize) {
    throw new DiskchainError('OUT_OF_RANGE', `range ${offset}+${length} is outside the virtual disk (${virtualSize} bytes)`, { file: path, offset });
  }
}

/** Appends an extent to `out`, merged into the last one when it follows it in the same state. */
export function appendExtent(out: Extent[], offset: number, length: number, state: ExtentState): void {
  const last = out[out.length - 1];
  if (last && last.state === state && last.offset + last.length === offset) last.length += length;
  else out.push({ offset, length, state });
}
