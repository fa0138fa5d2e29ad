/**
 * A real filesystem for the walkthrough tests: FAT images made with mkfs.fat (dosfstools) and
 * filled and listed with mtools, as an admin would on a raw image. Both tools are oracles: callers
 * check requireOracle(t, 'mkfs.fat') / requireOracle(t, 'mtools') first.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readSync, rmSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** mtools refuses images whose geometry it dislikes unless told not to check; mkfs.fat output is fine, but be safe. */
const MTOOLS_ENV = { ...process.env, MTOOLS_SKIP_CHECK: '1', TZ: 'UTC' };

/** A fixed date for every file put in an image, so images are byte-for-byte reproducible. */
const FIXED_TIME = new Date(Date.UTC(2024, 0, 2, 3, 4, 6));

/** Creates `path` (`size` bytes) holding an empty FAT16 filesystem with a fixed volume id and label. */
export function makeFat(path: string, size: number, label = 'WALKTHRU'): void {
  writeFileSync(path, '');
  truncateSync(path, size);
  execFileSync('mkfs.fat', ['-F', '16', '-i', '1234abcd', '-n', label, path], { stdio: 'pipe', env: MTOOLS_ENV });
}

/** Copies a file named `name` holding `content` into the root folder of the FAT image `image` (mcopy -i image … ::). */
export function fatPut(image: string, name: string, content: string | Uint8Array): void {
  const src = join(dirname(image), `.fat-src-${process.pid}-${name}`);
  writeFileSync(src, content);
  utimesSync(src, FIXED_TIME, FIXED_TIME);
  try {
    // -m keeps the source's (fixed) modification time; -o overwrites without asking.
    execFileSync('mcopy', ['-i', image, '-m', '-o', src, `::${name}`], { stdio: 'pipe', env: MTOOLS_ENV });
  } finally {
    rmSync(src, { force: true });
  }
}

/** The file names in the root folder of the FAT image (mdir -b), in directory order. */
export function fatList(image: string): string[] {
  const out = execFileSync('mdir', ['-i', image, '-b', '::'], { encoding: 'utf8', env: MTOOLS_ENV });
  return out
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0)
    .map((l) => l.replace(/^::\//, ''));
}

/** The full `mdir` listing (for messages). */
export function fatDir(image: string): string {
  return execFileSync('mdir', ['-i', image, '::'], { encoding: 'utf8', env: MTOOLS_ENV });
}

/** The content of `name` in the FAT image, as mtools reads it. */
export function fatGet(image: string, name: string): Buffer {
  return execFileSync('mcopy', ['-i', image, `::${name}`, '-'], { env: MTOOLS_ENV, maxBuffer: 64 * 1024 * 1024 });
}

/** A run of bytes that differ between two equal-sized images, aligned to whole sectors. */
export interface ChangedRun {
  offset: number;
  length: number;
}

/**
 * The sectors of `after` that differ from `before` (both files of one size), coalesced into runs:
 * what a guest would have written. Runs closer than `gap` bytes are joined.
 */
export function changedRuns(before: string, after: string, sector = 512, gap = 64 * 1024): ChangedRun[] {
  const runs: ChangedRun[] = [];
  const chunk = 4 * 1024 * 1024;
  const a = Buffer.alloc(chunk);
  const b = Buffer.alloc(chunk);
  const fa = openSync(before, 'r');
  const fb = openSync(after, 'r');
  try {
    for (let pos = 0; ; pos += chunk) {
      const na = readSync(fa, a, 0, chunk, pos);
      const nb = readSync(fb, b, 0, chunk, pos);
      if (na !== nb) throw new Error(`${before} and ${after} differ in size`);
      if (na === 0) break;
      for (let s = 0; s < na; s += sector) {
        const end = Math.min(s + sector, na);
        if (a.subarray(s, end).equals(b.subarray(s, end))) continue;
        const last = runs[runs.length - 1];
        const at = pos + s;
        if (last && at - (last.offset + last.length) <= gap) last.length = at + (end - s) - last.offset;
        else runs.push({ offset: at, length: end - s });
      }
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
  return runs;
}
