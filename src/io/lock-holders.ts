import { lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Who holds a lock: read from the kernel (/proc/locks, /proc/<pid>/...) and from small records each
 * diskchain process keeps in the user's runtime folder, never beside the disks (docs/locking.md).
 */

/** The process that holds a lock, as far as this user can see. */
export interface LockHolder {
  pid: number;
  command: string;
  /** ISO time: when the lock was taken (from the holder's record), else when the process started. */
  since: string;
}

/** A file's identity as /proc/locks prints it: `major:minor:inode`, hex device numbers. */
export interface FileKey {
  dev: bigint;
  ino: bigint;
}

export function keyText(key: FileKey): string {
  // glibc's encoding of st_dev (gnu_dev_major / gnu_dev_minor).
  const major = ((key.dev >> 8n) & 0xfffn) | ((key.dev >> 32n) & ~0xfffn);
  const minor = (key.dev & 0xffn) | ((key.dev >> 12n) & ~0xffn);
  return `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${key.ino}`;
}

/** One lock on the file, from /proc/locks: a byte range and whether it is shared (READ) or exclusive (WRITE). */
export interface LockRecord {
  exclusive: boolean;
  start: number;
  /** Last byte, inclusive; Infinity for "to the end of the file". */
  end: number;
}

/**
 * Every lock on the file listed in /proc/locks (undefined when it cannot be read). Advisory only: the
 * listing is produced a page at a time, so under heavy lock traffic a record can be missed; decisions
 * that must be exact are taken by the kernel through lock requests (see lock.ts). Read synchronously:
 * it is a small in-memory file, and this runs once per lock request.
 */
export function locksOn(key: FileKey): LockRecord[] | undefined {
  let text: string;
  try {
    text = readFileSync('/proc/locks', 'latin1');
  } catch {
    return undefined;
  }
  const id = keyText(key);
  const out: LockRecord[] = [];
  for (const line of text.split('\n')) {
    // "12: OFDLCK  ADVISORY  READ -1 fe:00:2154907 100 101"; "->" lines are waiters, not holders.
    if (!line.includes(` ${id} `) || line.includes('->')) continue;
    const f = line.trim().split(/\s+/);
    const at = f.indexOf(id);
    if (at < 2 || at + 2 >= f.length) continue;
    out.push({ exclusive: f[at - 2] === 'WRITE', start: Number(f[at + 1]), end: f[at + 2] === 'EOF' ? Infinity : Number(f[at + 2]) });
  }
  return out;
}

/** A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat), or undefined when it is gone. */
function startTicks(pid: number): string | undefined {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Linux reports process times in USER_HZ, which is 100 on every architecture's ABI. */
const USER_HZ = 100;

function startIso(ticks: string): string {
  try {
    const btime = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'latin1'))?.[1];
    if (btime) return new Date((Number(btime) + Number(ticks) / USER_HZ) * 1000).toISOString();
  } catch {
    // fall through
  }
  return 'unknown';
}

function commandLine(pid: number): string {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '');
    return argv.join(' ').slice(0, 300) || `pid ${pid}`;
  } catch {
    return `pid ${pid}`;
  }
}

// ---- holder records ------------------------------------------------------------------------

/** What this process holds, written to <records folder>/<pid>.json for others to name it. */
export interface HeldLock {
  file: string;
  key: string;
  mode: 'read' | 'write';
  command: string;
  since: string;
}

interface HolderRecord {
  pid: number;
  startTicks: string;
  locks: HeldLock[];
}

/**
 * The per-user folder for holder records: $XDG_RUNTIME_DIR/diskchain-locks (a per-user tmpfs, emptied
 * at logout) or, without one, a 0700 folder of this user's in /dev/shm (tmpfs) or else in the
 * temporary folder. In memory, a record costs a few microseconds, not a journal commit. Undefined when
 * neither is safe to use (then holders are named from /proc alone). Records are a few hundred bytes,
 * written synchronously: a lock request must not wait behind the thread pool.
 */
let recordsFolder: string | null | undefined;

function recordsDir(): string | undefined {
  if (recordsFolder === undefined) {
    recordsFolder = null;
    const uid = process.getuid?.() ?? 0;
    const candidates = [
      ...(process.env.XDG_RUNTIME_DIR ? [join(process.env.XDG_RUNTIME_DIR, 'diskchain-locks')] : []),
      `/dev/shm/diskchain-locks-${uid}`,
      join(tmpdir(), `diskchain-locks-${uid}`),
    ];
    for (const base of candidates) {
      try {
        mkdirSync(base, { mode: 0o700, recursive: true });
        const s = lstatSync(base);
        if (s.isDirectory() && s.uid === uid && (s.mode & 0o077) === 0) {
          recordsFolder = base;
          break;
        }
      } catch {
        // try the next
      }
    }
  }
  return recordsFolder ?? undefined;
}

let myStart: string | undefined;

/** Replaces this process's record with `locks` (removes it when empty). Best effort: a record only names a holder. */
export function publishHeld(locks: HeldLock[]): void {
  const dir = recordsDir();
  if (!dir) return;
  const path = join(dir, `${process.pid}.json`);
  try {
    if (locks.length === 0) {
      rmSync(path, { force: true });
      return;
    }
    if (myStart === undefined) {
      myStart = startTicks(process.pid) ?? '';
      removeStaleRecords(dir);
      process.once('exit', () => rmSync(path, { force: true }));
    }
    const record: HolderRecord = { pid: process.pid, startTicks: myStart, locks };
    writeFileSync(`${path}.tmp`, JSON.stringify(record), { mode: 0o600 });
    renameSync(`${path}.tmp`, path);
  } catch {
    // The lock stands without its record; its holder is then named from /proc.
  }
}

/** Names process `pid` as the holder of the file `key`: its live record if it has one, else /proc. */
export function describeHolder(pid: number, key: FileKey): LockHolder {
  const ticks = startTicks(pid);
  const dir = recordsDir();
  if (dir && ticks !== undefined) {
    try {
      const path = join(dir, `${pid}.json`);
      if (statSync(path).size < 1024 * 1024) {
        const record = JSON.parse(readFileSync(path, 'utf8')) as HolderRecord;
        // A record left by an earlier process with this pid does not count.
        const held = record.startTicks === ticks ? record.locks?.find((l) => l.key === keyText(key)) : undefined;
        if (held && typeof held.command === 'string' && typeof held.since === 'string') return { pid, command: held.command, since: held.since };
      }
    } catch {
      // no record, or unreadable: /proc
    }
  }
  return { pid, command: commandLine(pid), since: ticks !== undefined ? startIso(ticks) : 'unknown' };
}

/** Removes the records of processes that are gone (once per process, bounded). */
function removeStaleRecords(dir: string): void {
  try {
    for (const name of readdirSync(dir).slice(0, 1000)) {
      const pid = /^(\d+)\.json$/.exec(name)?.[1];
      if (pid && Number(pid) !== process.pid && startTicks(Number(pid)) === undefined) rmSync(join(dir, name), { force: true });
    }
  } catch {
    // best effort
  }
}

/**
 * Processes named like QEMU (qemu-system-*, qemu-img, qemu-io, qemu-nbd...) that have the file open,
 * found through /proc/<pid>/fd (visible for this user's processes, or all of them as root). Bounded.
 */
export async function qemuProcessesWith(key: FileKey): Promise<number[]> {
  const found: number[] = [];
  let pids: string[];
  try {
    pids = (await readdir('/proc')).filter((n) => /^\d+$/.test(n)).slice(0, 100_000);
  } catch {
    return found;
  }
  for (const pid of pids) {
    try {
      if (!(await readFile(`/proc/${pid}/comm`, 'latin1')).startsWith('qemu')) continue;
      for (const fd of (await readdir(`/proc/${pid}/fd`)).slice(0, 10_000)) {
        const s = await stat(`/proc/${pid}/fd/${fd}`, { bigint: true }).catch(() => undefined);
        if (s && s.dev === key.dev && s.ino === key.ino) {
          found.push(Number(pid));
          break;
        }
      }
    } catch {
      // gone, or not ours to look at
    }
  }
  return found;
}
