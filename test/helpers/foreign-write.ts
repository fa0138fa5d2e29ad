/**
 * A writer that takes no lock and knows nothing of merge journals (an older diskchain, a script on the
 * format library): what the locks cannot stop, and what a merge's identity and fingerprint checks must catch.
 */
import { FileSource } from '../../src/io/file-source.js';
import { detectFormat } from '../../src/formats/registry.js';

export async function writeWithoutLocks(path: string, data: Uint8Array, offset: number): Promise<void> {
  const source = await FileSource.open(path, { writable: true });
  const disk = await (await detectFormat(source)).open(source, { writable: true });
  try {
    await disk.write(data, offset);
  } finally {
    await disk.close();
  }
}
