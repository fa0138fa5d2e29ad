/**
 * read's output, to stdout or (-o) to a file. A regular file (or a new one) is written as
 * `<file>.diskchain-partial` (a leftover of a cut-short read is replaced), flushed, and renamed over
 * the name only once complete, then the folder is flushed: a failed or cancelled read, a kill -9 or a
 * power cut never leaves a truncated file under the name, nor harms the file that was there. Anything
 * else (/dev/null, a FIFO, a device) is written in place. The writes, the flush and the rename go
 * through FileSource and durable.ts, so the power-cut model sees them (docs/crash-safety.md).
 */
import { open, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { DiskChain } from '../chain/disk-chain.js';
import { PARTIAL_SUFFIX, removeFile, renameFile, syncFolder } from '../io/durable.js';
import { DiskchainError, throwIfAborted } from '../io/errors.js';
import { FileSource } from '../io/file-source.js';
import type { LongOperationOptions } from '../ops/progress.js';

const CHUNK = 4 * 1024 * 1024;

export async function readToFile(chain: DiskChain, offset: number, length: number, output: string, options: LongOperationOptions = {}): Promise<void> {
  const existing = await stat(output).catch(() => undefined);
  if (existing?.isDirectory()) throw new DiskchainError('INVALID_ARGUMENT', '-o names a folder; give a file name', { file: output });
  if (existing !== undefined && !existing.isFile()) return readInPlace(chain, offset, length, output, options);
  const partial = `${output}${PARTIAL_SUFFIX}`;
  await removeFile(partial);
  const file = await FileSource.create(partial, { name: output });
  try {
    await copyOut(chain, offset, length, options, (buf, at) => file.write(buf, at));
    await file.flush();
    await file.close();
    await renameFile(partial, output);
    await syncFolder(dirname(resolve(output)));
  } catch (e) {
    await file.close().catch(() => undefined);
    await removeFile(partial);
    throw e;
  }
}

/** read without -o: the bytes to stdout, in order, waiting whenever the pipe is full. */
export function readToStdout(chain: DiskChain, offset: number, length: number): Promise<void> {
  return copyOut(chain, offset, length, {}, async (buf) => {
    if (!process.stdout.write(buf)) await new Promise((r) => process.stdout.once('drain', r));
  });
}

/** A device, FIFO or the like: written in place, in order (a FIFO cannot seek). */
async function readInPlace(chain: DiskChain, offset: number, length: number, output: string, options: LongOperationOptions): Promise<void> {
  let fh;
  try {
    fh = await open(output, 'w');
  } catch (e) {
    throw new DiskchainError('IO', `cannot write ${output}: ${(e as Error).message}`, { file: output, errno: (e as NodeJS.ErrnoException).code });
  }
  try {
    await copyOut(chain, offset, length, options, async (buf) => void (await fh.write(buf, 0, buf.length, null)));
  } finally {
    await fh.close();
  }
}

async function copyOut(chain: DiskChain, offset: number, length: number, options: LongOperationOptions, put: (buf: Uint8Array, at: number) => Promise<void>): Promise<void> {
  for (let done = 0; done < length; ) {
    throwIfAborted(options.signal);
    const buf = new Uint8Array(Math.min(CHUNK, length - done));
    await chain.read(buf, offset + done);
    await put(buf, done);
    done += buf.length;
    options.onProgress?.(done, length);
  }
}
