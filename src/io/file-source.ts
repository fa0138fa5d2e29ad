import { writeSync, writevSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import type { ByteSource } from './byte-source.js';
import { DiskchainError } from './errors.js';
import { fileEventListener, nextFileId } from './file-events.js';

/**
 * Where file writes run:
 *  - 'thread-pool' (the default): on libuv's thread pool, so a slow device never stalls the event loop;
 *  - 'calling-thread': on the JavaScript thread, as a plain pwrite. Each write then blocks the event
 *    loop for as long as the kernel takes to take the bytes (into the page cache, normally), but skips
 *    two thread hand-offs; measured on a 1 GiB convert that is 5 to 10% of the wall time. The CLI, which
 *    owns its process, uses it. Reads and flushes stay on the thread pool either way.
 */
export type FileWriteMode = 'thread-pool' | 'calling-thread';

let writeMode: FileWriteMode = 'thread-pool';

/** Sets where every FileSource in this process writes (see FileWriteMode). */
export function setFileWriteMode(mode: FileWriteMode): void {
  writeMode = mode;
}

/** In 'calling-thread' mode: lets work already started (a read ahead, say) queue its I/O before this thread blocks. */
async function beforeBlockingWrite(): Promise<void> {
  if (writeMode === 'calling-thread') await new Promise<void>((resolve) => setImmediate(resolve));
}

/** A ByteSource over a file. Opened read-only unless asked otherwise. Writable ones report their changes (file-events.ts). */
export class FileSource implements ByteSource {
  readonly name: string;
  readonly readOnly: boolean;
  private readonly fh: FileHandle;
  private closed = false;
  private readonly closers: Array<() => Promise<void>> = [];
  /** Numbers this open in file events. */
  private readonly eventId = nextFileId();

  /** `file` is where the file is when that is not its name (a staged create, durable.ts). */
  private constructor(name: string, fh: FileHandle, readOnly: boolean, created = false, file = name) {
    this.name = name;
    this.fh = fh;
    this.readOnly = readOnly;
    if (!readOnly) fileEventListener()?.({ kind: 'open', file: this.eventId, path: file, created });
  }

  /** `onClose` runs after the file is closed (the open's lock is released there). */
  static async open(path: string, options: { writable?: boolean; onClose?: () => Promise<void> } = {}): Promise<FileSource> {
    const writable = options.writable ?? false;
    let fh: FileHandle;
    try {
      fh = await open(path, writable ? 'r+' : 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EISDIR') throw notAFile(path);
      throw ioError(e, 'cannot open file', path);
    }
    // Linux opens a folder read-only; its first read would fail with EISDIR.
    if ((await fh.stat().catch(() => undefined))?.isDirectory()) {
      await fh.close();
      throw notAFile(path);
    }
    const source = new FileSource(path, fh, !writable);
    if (options.onClose) source.onClose(options.onClose);
    return source;
  }

  /** Runs `fn` once the file is closed. */
  onClose(fn: () => Promise<void>): void {
    this.closers.push(fn);
  }

  /** The open file's device and inode (bigint), to check it is the file a lock was taken on. */
  async stat(): Promise<{ dev: bigint; ino: bigint }> {
    const s = await this.fh.stat({ bigint: true });
    return { dev: s.dev, ino: s.ino };
  }

  /** Creates a new file; refuses to replace an existing one. `name` names it in errors and to the formats (default: `path`). */
  static async create(path: string, options: { name?: string } = {}): Promise<FileSource> {
    try {
      return new FileSource(options.name ?? path, await open(path, 'wx+'), false, true, path);
    } catch (e) {
      throw ioError(e, 'cannot create file', path);
    }
  }

  async size(): Promise<number> {
    return (await this.fh.stat()).size;
  }

  async read(target: Uint8Array, offset: number): Promise<void> {
    const n = await this.readAvailable(target, offset);
    if (n < target.length) {
      throw new DiskchainError('TRUNCATED', `short read: wanted ${target.length} bytes, file ends after ${n}`, { file: this.name, offset });
    }
  }

  async readAvailable(target: Uint8Array, offset: number): Promise<number> {
    let done = 0;
    while (done < target.length) {
      const { bytesRead } = await this.fh.read(target, done, target.length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }

  async write(data: Uint8Array, offset: number): Promise<void> {
    this.assertWritable();
    fileEventListener()?.({ kind: 'write', file: this.eventId, offset, data });
    let done = 0;
    await beforeBlockingWrite();
    try {
      while (done < data.length) {
        done += writeMode === 'calling-thread'
          ? writeSync(this.fh.fd, data, done, data.length - done, offset + done)
          : (await this.fh.write(data, done, data.length - done, offset + done)).bytesWritten;
      }
    } catch (e) {
      throw ioError(e, 'write failed', this.name, offset + done);
    }
  }

  async writeParts(parts: readonly Uint8Array[], offset: number): Promise<void> {
    this.assertWritable();
    const total = parts.reduce((n, p) => n + p.length, 0);
    const listener = fileEventListener();
    for (let i = 0, at = offset; listener && i < parts.length; at += parts[i]!.length, i++) listener({ kind: 'write', file: this.eventId, offset: at, data: parts[i]! });
    let done = 0;
    await beforeBlockingWrite();
    try {
      done = writeMode === 'calling-thread' ? writevSync(this.fh.fd, parts as Uint8Array[], offset) : (await this.fh.writev(parts as Uint8Array[], offset)).bytesWritten;
    } catch (e) {
      throw ioError(e, 'write failed', this.name, offset);
    }
    // A short gathered write: finish the rest piece by piece.
    for (let at = 0, i = 0; done < total && i < parts.length; at += parts[i]!.length, i++) {
      const p = parts[i]!;
      if (at + p.length <= done) continue;
      const skip = Math.max(0, done - at);
      await this.write(p.subarray(skip), offset + at + skip);
      done = at + p.length;
    }
  }

  async truncate(length: number): Promise<void> {
    this.assertWritable();
    fileEventListener()?.({ kind: 'truncate', file: this.eventId, length });
    try {
      await this.fh.truncate(length);
    } catch (e) {
      throw ioError(e, 'cannot resize file', this.name);
    }
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    fileEventListener()?.({ kind: 'flush-start', file: this.eventId });
    try {
      await this.fh.sync();
    } catch (e) {
      throw ioError(e, 'flush failed', this.name);
    }
    fileEventListener()?.({ kind: 'flush-done', file: this.eventId });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.fh.close();
    } finally {
      for (const fn of this.closers.splice(0)) await fn();
    }
  }

  private assertWritable(): void {
    if (this.readOnly) throw new DiskchainError('READ_ONLY', 'file is open read-only', { file: this.name });
  }
}

/** A folder given where a disk image file is expected. */
export function notAFile(path: string): DiskchainError {
  return new DiskchainError('INVALID_ARGUMENT', 'a folder, not a disk image file', { file: path, errno: 'EISDIR' });
}

function ioError(e: unknown, what: string, file: string, offset?: number): DiskchainError {
  const errno = (e as NodeJS.ErrnoException).code;
  const code = errno === 'ENOSPC' || errno === 'EDQUOT' ? 'NO_SPACE' : 'IO';
  const reason = e instanceof Error ? e.message : String(e);
  return new DiskchainError(code, `${what}: ${reason}`, { file, ...(offset !== undefined ? { offset } : {}), errno }, { cause: e });
}
