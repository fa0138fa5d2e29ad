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
    case 'EXISTS':
      return 'Something already has that name: pick another one. Nothing was changed.';
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

/** Hyper-V's limit on VM and checkpoint names (the engine refuses longer ones with INVALID_ARGUMENT). */
export const MAX_NAME = 100;

/** What is wrong with a VM or checkpoint name, said before anything is sent; null when it is fine. */
export function nameProblem(name: string): string | null {
  if (name.trim() === '') return 'A name is needed.';
  if (name.length > MAX_NAME) return `A name has at most ${MAX_NAME} characters (this one has ${name.length}).`;
  return null;
}

/** A folder name made from a VM's name: runs of anything but letters, digits, dot and underscore become one dash. */
export function folderNameOf(name: string): string {
  return name.replace(/[^A-Za-z0-9._]+/g, '-').replace(/^[-.]+|-+$/g, '') || 'vm';
}

export function dirName(path: string): string {
  const at = path.lastIndexOf('/');
  return at <= 0 ? '/' : path.slice(0, at);
}
