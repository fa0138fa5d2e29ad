/**
 * Crash writer: opens a VHDX writable and performs the seeded stream of vhdx-crash-stream.ts until it
 * is killed. It prints "opening" before the open starts and "ready" once it is done; after each flush
 * completes it prints "flushed N" (N = writes performed so far) synchronously, so a line on stdout
 * means the flush returned before the kill. The test kills on these events, never after a delay.
 *
 * usage: node vhdx-crash-writer.js <path> <seed> <virtualSize> <logicalSectorSize> <blockSize> <count>
 */
import { writeSync } from 'node:fs';
import { FileSource } from '../../src/io/file-source.js';
import { detectFormat } from '../../src/formats/registry.js';
import { crashStream, opData } from './vhdx-crash-stream.js';

async function main(): Promise<void> {
  const [path, seed, virtualSize, logicalSectorSize, blockSize, count] = process.argv.slice(2);
  if (!path || !seed || !virtualSize || !logicalSectorSize || !blockSize || !count) throw new Error('usage: vhdx-crash-writer <path> <seed> <virtualSize> <lss> <blockSize> <count>');
  const ops = crashStream(Number(seed), { virtualSize: Number(virtualSize), logicalSectorSize: Number(logicalSectorSize), blockSize: Number(blockSize) }, Number(count));
  // The format is found by content: the same writer drives VHDX and VHD files.
  writeSync(1, 'opening\n');
  const source = await FileSource.open(path, { writable: true });
  const disk = await (await detectFormat(source)).open(source, { writable: true });
  writeSync(1, 'ready\n');
  let writes = 0;
  for (const op of ops) {
    if (op.kind === 'write') {
      await disk.write(opData(op), op.offset);
      writes++;
    } else {
      await disk.flush();
      writeSync(1, `flushed ${writes}\n`);
    }
  }
  await disk.close();
  writeSync(1, `flushed ${writes}\ndone\n`);
}

main().catch((e: unknown) => {
  writeSync(2, `crash writer failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(3);
});
