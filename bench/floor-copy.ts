/**
 * The Node floor for the bench: the least any Node.js program must do to copy a raw image to a raw
 * image, skipping all-zero chunks: 2 MiB reads on the thread pool, one read ahead, each write a plain
 * pwrite on the JavaScript thread (as the CLI writes, see FileWriteMode), fsync at the end.
 * No format, no checks. Timed beside `qemu-img convert -f raw -O raw` it shows what part of a
 * diskchain/qemu-img ratio is Node itself (process start-up, event loop hand-offs), not our code.
 * Usage: node floor-copy.js SOURCE TARGET
 */
import { writeSync } from 'node:fs';
import { open } from 'node:fs/promises';

const CHUNK = 2 * 1024 * 1024;
const [sourcePath, targetPath] = process.argv.slice(2);
if (!sourcePath || !targetPath) throw new Error('usage: floor-copy SOURCE TARGET');
const source = await open(sourcePath, 'r');
const target = await open(targetPath, 'wx');
const size = (await source.stat()).size;
await target.truncate(size);
const buffers = [Buffer.allocUnsafe(CHUNK), Buffer.allocUnsafe(CHUNK)];
const zeros = Buffer.alloc(CHUNK);
let next = source.read(buffers[0]!, 0, Math.min(CHUNK, size), 0);
for (let i = 0, at = 0; at < size; at += CHUNK, i++) {
  const { bytesRead } = await next;
  const data = buffers[i % 2]!.subarray(0, bytesRead);
  if (at + CHUNK < size) next = source.read(buffers[(i + 1) % 2]!, 0, Math.min(CHUNK, size - at - CHUNK), at + CHUNK);
  if (!data.equals(zeros.subarray(0, bytesRead))) writeSync(target.fd, data, 0, bytesRead, at);
}
await target.sync();
await source.close();
await target.close();
