// A small file system that can be filled up (tmpfs; mounting needs root) for the Paused-Critical tests.
import { spawnSync } from 'node:child_process';
import { open } from 'node:fs/promises';

/** Mounts a tmpfs of `size` (e.g. "48m") on `path`; the error text when it cannot (not root). */
export function mountTmpfs(path: string, size: string): { ok: true; unmount: () => void } | { ok: false; error: string } {
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', path]);
  if (mounted.status !== 0) return { ok: false, error: `cannot mount a tmpfs (needs root): ${mounted.stderr}` };
  return { ok: true, unmount: () => void spawnSync('umount', ['-l', path]) };
}

/** Writes zeros into `path` until the file system refuses (ENOSPC). */
export async function fillUp(path: string): Promise<void> {
  const fh = await open(path, 'w');
  const chunk = Buffer.alloc(256 * 1024);
  try {
    for (;;) await fh.write(chunk);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    await fh.close().catch(() => undefined);
  }
}
