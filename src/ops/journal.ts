import { readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { removeFile, syncFolder, writeFileAtomic } from '../io/durable.js';
import { DiskchainError } from '../io/errors.js';

export { syncFolder };

/** Journals larger than this are not ours (bounded read of an untrusted file). */
const MAX_JOURNAL_BYTES = 1024 * 1024;

/**
 * A small JSON record beside the disk an operation changes, replaced atomically (write a temporary
 * file, flush it, rename it over the old one, flush the folder), so after a crash it holds either
 * the previous state or the next one.
 */
export async function writeJournal(path: string, record: object): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`);
}

/** The journal's record, or undefined when there is none. Unparseable content is an error, never ignored. */
export async function readJournal(path: string): Promise<Record<string, unknown> | undefined> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch {
    return undefined;
  }
  if (size > MAX_JOURNAL_BYTES) throw new DiskchainError('JOURNAL_MISMATCH', `journal is ${size} bytes, larger than any diskchain writes`, { file: path });
  try {
    const value: unknown = JSON.parse(await readFile(path, 'utf8'));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object');
    return value as Record<string, unknown>;
  } catch (e) {
    throw new DiskchainError('JOURNAL_MISMATCH', `journal cannot be read (${e instanceof Error ? e.message : String(e)}); inspect it, and remove it only if no operation is in progress`, { file: path });
  }
}

export async function removeJournal(path: string): Promise<void> {
  await removeFile(path);
  await removeFile(`${path}.tmp`);
  await syncFolder(dirname(path));
}
