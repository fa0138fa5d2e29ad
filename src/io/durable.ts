import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { link, lstat, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DiskchainError } from './errors.js';
import { fileEventListener, nextFileId } from './file-events.js';
import { FileSource } from './file-source.js';

/** Suffix of a file being made, before it appears under its name. */
export const PARTIAL_SUFFIX = '.diskchain-partial';

export interface StagedFile {
  /** Writes go here; the source carries the final name (errors, a format's relative paths). */
  readonly source: FileSource;
  /** The file's name until it is published. */
  readonly partialPath: string;
  /** Flushes the file and makes it appear under its name, never replacing a file there; durable on return. */
  publish(): Promise<void>;
  /** Removes the partial file (after a failure). */
  discard(): Promise<void>;
}

/**
 * Creates `path` so that a crash or power cut never leaves a partly written file under that name: the
 * file is made as `<path>.diskchain-partial` (a leftover of an earlier cut-short create is replaced)
 * and given its name by publish() once flushed, with a hard link that fails if `path` exists (a rename
 * would replace it), then the folder is flushed. Refuses an existing `path` up front.
 */
export async function createStaged(path: string): Promise<StagedFile> {
  const exists = (): DiskchainError => new DiskchainError('IO', 'cannot create file: it already exists', { file: path, errno: 'EEXIST' });
  if (await lstat(path).catch(() => undefined)) throw exists();
  const partial = `${path}${PARTIAL_SUFFIX}`;
  await removeFile(partial);
  const source = await FileSource.create(partial, { name: path });
  return {
    source,
    partialPath: partial,
    async publish() {
      await source.flush();
      fileEventListener()?.({ kind: 'rename', from: partial, to: path });
      try {
        await link(partial, path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw exists();
        throw new DiskchainError('IO', `cannot create file: ${e instanceof Error ? e.message : String(e)}`, { file: path, errno: (e as NodeJS.ErrnoException).code }, { cause: e });
      }
      await rm(partial, { force: true });
      await syncFolder(dirname(path));
    },
    discard: () => removeFile(partial),
  };
}

/**
 * Replaces `path` with `text` atomically: write a temporary file, flush it, rename it over the old
 * one, flush the folder. After a crash (or a power cut) the file holds the old text or the new one.
 */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp`;
  await removeFile(tmp);
  const file = await FileSource.create(tmp);
  try {
    await file.write(new TextEncoder().encode(text), 0);
    await file.flush();
  } finally {
    await file.close();
  }
  await renameFile(tmp, path);
  await syncFolder(dirname(path));
}

/**
 * writeFileAtomic for the few places that must finish before a synchronous callback returns. Each step
 * is reported as writeFileAtomic's are (file-events.ts), so the power-cut model sees it.
 */
export function writeFileAtomicSync(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  const data = new TextEncoder().encode(text);
  const file = nextFileId();
  fileEventListener()?.({ kind: 'remove', path: tmp });
  rmSync(tmp, { force: true });
  const fd = openSync(tmp, 'w');
  try {
    fileEventListener()?.({ kind: 'open', file, path: tmp, created: true });
    fileEventListener()?.({ kind: 'write', file, offset: 0, data });
    for (let at = 0; at < data.length; ) at += writeSync(fd, data, at);
    fileEventListener()?.({ kind: 'flush-start', file });
    fsyncSync(fd);
    fileEventListener()?.({ kind: 'flush-done', file });
  } finally {
    closeSync(fd);
  }
  fileEventListener()?.({ kind: 'rename', from: tmp, to: path });
  renameSync(tmp, path);
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
  fileEventListener()?.({ kind: 'sync-folder', folder: dirname(path) });
}

/** Renames `from` over `to`; durable once the folder is flushed (syncFolder). */
export async function renameFile(from: string, to: string): Promise<void> {
  fileEventListener()?.({ kind: 'rename', from, to });
  await rename(from, to);
}

/** Gives the file `from` a second name `to` (a hard link; fails if `to` exists); durable once the folder is flushed (syncFolder). */
export async function linkFile(from: string, to: string): Promise<void> {
  fileEventListener()?.({ kind: 'link', from, to });
  await link(from, to);
}

/**
 * Makes durable, data and name, a file another process has just created and written in full (QEMU's
 * migration stream through `exec:cat > file`): the file, then its folder. The power-cut model sees it
 * as created and written here, the only moment its content is known.
 */
export async function syncWrittenFile(path: string): Promise<void> {
  const listener = fileEventListener();
  if (listener) listener({ kind: 'written', path, data: new Uint8Array(await readFile(path)) });
  await syncFile(path);
  await syncFolder(dirname(path));
}

/** Removes `path` if it exists; durable once the folder is flushed (syncFolder). */
export async function removeFile(path: string): Promise<void> {
  fileEventListener()?.({ kind: 'remove', path });
  await rm(path, { force: true });
}

/**
 * Makes a file durable as it stands, data and times (fsync; fdatasync, which writers such as QEMU
 * flush with, may leave the times to the file system's next commit), without opening it for writing.
 */
export async function syncFile(path: string): Promise<void> {
  await fsyncPath(path);
  fileEventListener()?.({ kind: 'sync-file', path });
}

/** Makes renames and removals in a folder durable. */
export async function syncFolder(folder: string): Promise<void> {
  await fsyncPath(folder);
  fileEventListener()?.({ kind: 'sync-folder', folder });
}

/** fsync through a read-only open (Linux allows it for files and folders alike). */
async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
