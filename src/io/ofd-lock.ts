import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { DiskchainError } from './errors.js';

/**
 * One-byte open file description locks (Linux `fcntl(F_OFD_SETLK)`), through the npm package
 * fs-native-extensions (see docs/locking.md for why this one). An OFD lock belongs to the open file
 * description, not to the process: closing another descriptor of the same file in this process does
 * not drop it, and two descriptions of one file in one process conflict like two processes would.
 */
export interface OfdLocks {
  /** Takes (or converts to) a shared or exclusive lock on one byte; false when another description holds a conflicting one. */
  tryLock(fd: number, byte: number, exclusive: boolean): boolean;
  unlock(fd: number, byte: number): void;
}

/** The addon's own entry points: exact arity, errors thrown with `code` (EAGAIN when the byte is taken). */
interface Binding {
  tryLock(fd: number, offset: number, length: number, exclusive: boolean): void;
  unlock(fd: number, offset: number, length: number): void;
}

/** The package's JavaScript entry (used when no prebuilt addon matches this platform). */
interface PackageEntry {
  tryLock(fd: number, offset: number, length: number, opts: { shared: boolean }): boolean;
  unlock(fd: number, offset: number, length: number): void;
}

let loaded: OfdLocks | undefined;

/**
 * Loads the addon on first use. The prebuilt binary for this platform is loaded directly (2-4 ms);
 * the package's own loader resolves it through several helper packages and costs about 17 ms at
 * every command's start.
 */
export function ofdLocks(): OfdLocks {
  if (loaded) return loaded;
  const req = createRequire(import.meta.url);
  try {
    const dir = dirname(req.resolve('fs-native-extensions/package.json'));
    const binding = req(join(dir, 'prebuilds', `${process.platform}-${process.arch}`, 'fs-native-extensions.node')) as Binding;
    loaded = {
      tryLock: (fd, byte, exclusive) => {
        try {
          binding.tryLock(fd, byte, 1, exclusive);
          return true;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'EAGAIN') return false;
          throw e;
        }
      },
      unlock: (fd, byte) => binding.unlock(fd, byte, 1),
    };
  } catch {
    let entry: PackageEntry;
    try {
      entry = req('fs-native-extensions') as PackageEntry;
    } catch (e) {
      throw new DiskchainError('UNSUPPORTED', `byte-range locks are not available on ${process.platform}-${process.arch} (fs-native-extensions: ${e instanceof Error ? e.message : String(e)})`);
    }
    loaded = { tryLock: (fd, byte, exclusive) => entry.tryLock(fd, byte, 1, { shared: !exclusive }), unlock: (fd, byte) => entry.unlock(fd, byte, 1) };
  }
  return loaded;
}
