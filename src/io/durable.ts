import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { fileEventListener } from './file-events.js';
import { FileSource } from './file-source.js';

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

/** writeFileAtomic for the few places that must finish before a synchronous callback returns. */
export function writeFileAtomicSync(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  const dir = openSync(dirname(path), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/** Renames `from` over `to`; durable once the folder is flushed (syncFolder). */
export async function renameFile(from: string, to: string): Promise<void> {
  fileEventListener()?.({ kind: 'rename', from, to });
  await rename(from, to);
}

/** Removes `path` if it exists; durable once the folder is flushed (syncFolder). */
export async function removeFile(path: string): Promise<void> {
  fileEventListener()?.({ kind: 'remove', path });
  await rm(path, { force: true });
}

/** Makes renames and removals in a folder durable. */
export async function syncFolder(folder: string): Promise<void> {
  const fh = await open(folder, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  fileEventListener()?.({ kind: 'sync-folder', folder });
}
