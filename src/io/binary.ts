import { DiskchainError } from './errors.js';

/** Converts a 64-bit on-disk value to a number, refusing anything above 2^53. */
export function toSafeNumber(value: bigint, what: string, file: string, offset?: number): number {
  if (value < 0n || value > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new DiskchainError('CORRUPT', `${what} is out of range (${value})`, { file, ...(offset !== undefined ? { offset } : {}) });
  }
  return Number(value);
}

export function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

export function asciiAt(buf: Uint8Array, offset: number, length: number): string {
  return String.fromCharCode(...buf.subarray(offset, offset + length));
}

export function writeAscii(buf: Uint8Array, offset: number, text: string): void {
  for (let i = 0; i < text.length; i++) buf[offset + i] = text.charCodeAt(i) & 0xff;
}

/** UTF-16LE text up to the first NUL (or the whole span). */
export function utf16leAt(buf: Uint8Array, offset: number, length: number): string {
  const span = Buffer.from(buf.buffer, buf.byteOffset + offset, length);
  const text = span.toString('utf16le');
  const nul = text.indexOf('\u0000');
  return nul >= 0 ? text.slice(0, nul) : text;
}

export function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0 && n <= 2 ** 30;
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}

const ZEROS = new Uint8Array(1024 * 1024);

/** True when every byte is zero (compared a megabyte at a time with memcmp). */
export function isAllZero(buf: Uint8Array): boolean {
  for (let at = 0; at < buf.length; at += ZEROS.length) {
    const n = Math.min(ZEROS.length, buf.length - at);
    if (Buffer.compare(buf.subarray(at, at + n), ZEROS.subarray(0, n)) !== 0) return false;
  }
  return true;
}
