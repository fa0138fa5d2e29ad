/**
 * Crash writer for setParent: opens a differencing VHDX or VHD writable (format found by content) and
 * rewrites its parent link over and over, cycling through the links in a JSON file, until it is killed.
 * After each setParent returns it prints "set N" (N = calls completed) synchronously, so a line on
 * stdout means that call finished before the kill.
 *
 * usage: node set-parent-crash-writer.js <path> <links.json> <count>
 */
import { readFileSync, writeSync } from 'node:fs';
import { FileSource } from '../../src/io/file-source.js';
import { detectFormat } from '../../src/formats/registry.js';
import type { ParentLinkUpdate } from '../../src/formats/types.js';

async function main(): Promise<void> {
  const [path, linksPath, count] = process.argv.slice(2);
  if (!path || !linksPath || !count) throw new Error('usage: set-parent-crash-writer <path> <links.json> <count>');
  const links = JSON.parse(readFileSync(linksPath, 'utf8')) as ParentLinkUpdate[];
  const source = await FileSource.open(path, { writable: true });
  const disk = await (await detectFormat(source)).open(source, { writable: true });
  if (!disk.setParent) throw new Error(`${disk.format} has no setParent`);
  writeSync(1, 'ready\n');
  for (let i = 0; i < Number(count); i++) {
    await disk.setParent(links[i % links.length]!);
    writeSync(1, `set ${i + 1}\n`);
  }
  await disk.close();
  writeSync(1, 'done\n');
}

main().catch((e: unknown) => {
  writeSync(2, `set-parent crash writer failed: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(3);
});
