// How numbers, times and engine errors read on the page.
import type { ErrorBody } from './api.js';

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = n;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

export function when(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** What the person can do about an engine error, by its code. */
export function hintFor(e: ErrorBody): string | null {
  switch (e.code) {
    case 'LOCKED':
      return 'Another operation (a job here, another diskchain, or QEMU) is using it. Wait for it to finish or stop it, then try again.';
    case 'NO_SPACE': {
      const needed = typeof e.needed === 'number' ? e.needed : null;
      const free = typeof e.free === 'number' ? e.free : null;
      return needed !== null && free !== null
        ? `It needs ${bytes(needed)} and the file system has ${bytes(free)} free: free ${bytes(needed - free)} more and try again. Nothing was changed.`
        : 'The file system is full. Free some space and try again; a merge resumes where it stopped.';
    }
    case 'HAS_DEPENDENTS':
      return 'Other disks depend on this file: changing it would corrupt them. Remove or merge those first.';
    case 'PATH_NOT_ALLOWED':
      return 'The path is outside the folders this console was started with (--root).';
    case 'FORBIDDEN':
      return 'The page lost its token: open the URL the console printed again.';
    case 'PARENT_NOT_FOUND':
    case 'PARENT_MISMATCH':
      return 'A parent disk is missing or is not the one this disk was made from: scan the folder on the Recovery page to find it by identity.';
    case 'CORRUPT':
    case 'TRUNCATED':
      return 'The file is damaged. Nothing was changed; `diskchain check` lists what is wrong.';
    case 'JOURNAL_MISMATCH':
      return 'An interrupted operation left a journal that no longer fits the files: see `diskchain check`.';
    case 'ABORTED':
      return 'Cancelled. An interrupted merge resumes when run again.';
    case 'INTERNAL':
      return 'A bug in diskchain: the details are in the terminal that runs the console.';
    default:
      return null;
  }
}
