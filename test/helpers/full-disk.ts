/**
 * ByteSource wrappers for fault injection. `fullDiskAfter` behaves like a file system with `room`
 * bytes left: writes that would grow the file past it fail with NO_SPACE. Given an object, its
 * `bytes` may be raised later ("space freed").
 */
import type { ByteSource } from '../../src/io/byte-source.js';
import { DiskchainError } from '../../src/io/errors.js';

/** `inner` with its writes and truncations going through `hooks` first (everything else passes through). */
export function intercepting(inner: ByteSource, hooks: { write: (d: Uint8Array, o: number) => Promise<void>; truncate?: (n: number) => Promise<void> }): ByteSource {
  return {
    name: inner.name,
    readOnly: inner.readOnly,
    size: () => inner.size(),
    read: (t, o) => inner.read(t, o),
    readAvailable: (t, o) => inner.readAvailable(t, o),
    write: hooks.write,
    truncate: hooks.truncate ?? ((n) => inner.truncate(n)),
    flush: () => inner.flush(),
    close: () => inner.close(),
  };
}

export function fullDiskAfter(room: number | { bytes: number }): (inner: ByteSource) => ByteSource {
  return (inner) => {
    let base: number | undefined;
    const check = async (offset: number, length: number): Promise<void> => {
      base ??= await inner.size();
      if (offset + length > base + (typeof room === 'number' ? room : room.bytes)) throw new DiskchainError('NO_SPACE', 'write failed: ENOSPC: no space left on device (injected)', { file: inner.name, offset });
    };
    return intercepting(inner, {
      write: async (d, o) => {
        await check(o, d.length);
        await inner.write(d, o);
      },
      truncate: async (n) => {
        await check(0, n);
        await inner.truncate(n);
      },
    });
  };
}
