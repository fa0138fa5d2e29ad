import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { DiskchainError } from './errors.js';
import { notAFile } from './file-source.js';
import { describeHolder, keyText, locksOn, publishHeld, qemuProcessesWith, type FileKey, type HeldLock, type LockRecord } from './lock-holders.js';
import { ofdLocks } from './ofd-lock.js';

export type { LockHolder } from './lock-holders.js';

/**
 * File locks that exclude other diskchain processes and QEMU, both ways (docs/locking.md).
 *
 * The bytes are QEMU's (block/file-posix.c): a shared lock on byte 100+N says "I hold permission N",
 * one on byte 200+N "I do not let others have permission N"; N = 0 consistent read, 1 write, 3 resize.
 * Before using a file QEMU checks that nobody holds 200+N for a permission N it wants, nor 100+N for
 * one it does not share. diskchain takes the same bytes as QEMU does for a guest's drive (write) and
 * for `qemu-img info` (read), plus bytes of its own far past any disk's end:
 *
 *   read:  shared 100, 201, 203, DISKCHAIN, READER_PID+pid    must be free of others: 200, 101, 103
 *   write: shared 100, 101, 103, 201, 203, WRITER_PID+pid;
 *          exclusive DISKCHAIN                                must be free of others: 200, 201, 203, 101, 103
 *
 * DISKCHAIN makes diskchain against diskchain exact in one kernel request (readers share it, a writer
 * takes it alone). A writer checks QEMU's bytes by asking for each one exclusively for an instant (the
 * kernel refuses while anyone else holds it) and then going back; a reader, which may only have the
 * file open read-only, checks them in /proc/locks. The pid bytes name the holders (/proc/locks lists
 * byte ranges, and OFD locks carry no pid).
 *
 * The locks are open file description locks on a descriptor of their own: closing other descriptors
 * of the file in this process leaves them, and the kernel drops them when the process dies, however
 * it dies, so a dead holder's lock is simply gone.
 */
export type LockMode = 'read' | 'write';

export interface FileLock {
  readonly path: string;
  readonly mode: LockMode;
  /** The file locked (device and inode), so a caller can check a descriptor it opened is the same file. */
  readonly dev: bigint;
  readonly ino: bigint;
  release(): Promise<void>;
}

export interface LockOptions {
  /** What the holder is doing, shown to whoever is refused (default: this process's command line). */
  command?: string;
  /**
   * Write only: refuse a second sole lock on the same file in this process. Locks of one process
   * share the file (an operation's lock and the opens inside it); two writable handles of one file
   * in one process would not know of each other's caches, so writable opens take sole locks.
   */
  sole?: boolean;
}

const CONSISTENT_READ = 0;
const WRITE = 1;
const RESIZE = 3;
const PERM = (n: number): number => 100 + n;
const UNSHARE = (n: number): number => 200 + n;
/** Bytes of diskchain's own, past the end of any disk (locks do not stop reads or writes of the data). */
export const DISKCHAIN_BYTE = 2 ** 40;
export const WRITER_PID_BASE = 2 ** 40 + 2 ** 23;
export const READER_PID_BASE = 2 ** 40 + 2 ** 24;
/** Linux pids are below 2^22. */
const PID_SPAN = 2 ** 22;
/** QEMU's bytes: 100-104 and 200-204 (permissions 0-4). */
const QEMU_BYTES = [0, 1, 2, 3, 4].flatMap((n) => [PERM(n), UNSHARE(n)]);

interface Spec {
  shared: number[];
  exclusive: number[];
  /** Bytes no other open file description may hold. */
  free: number[];
}

function spec(mode: LockMode): Spec {
  return mode === 'read'
    ? { shared: [PERM(CONSISTENT_READ), UNSHARE(WRITE), UNSHARE(RESIZE), DISKCHAIN_BYTE, READER_PID_BASE + process.pid], exclusive: [], free: [UNSHARE(CONSISTENT_READ), PERM(WRITE), PERM(RESIZE)] }
    : {
        shared: [PERM(CONSISTENT_READ), PERM(WRITE), PERM(RESIZE), UNSHARE(WRITE), UNSHARE(RESIZE), WRITER_PID_BASE + process.pid],
        exclusive: [DISKCHAIN_BYTE],
        free: [UNSHARE(CONSISTENT_READ), UNSHARE(WRITE), UNSHARE(RESIZE), PERM(WRITE), PERM(RESIZE)],
      };
}

interface Handle {
  mode: LockMode;
  command: string;
  since: string;
  sole: boolean;
}

/** One locked file in this process: one descriptor, the strongest mode any handle asked for. */
interface Entry {
  key: FileKey;
  path: string;
  fh: FileHandle;
  writableFd: boolean;
  held: LockMode;
  handles: Set<Handle>;
}

const entries = new Map<string, Entry>();
let defaultCommand = `${basename(process.argv[1] ?? 'node')} ${process.argv.slice(2).join(' ')}`.trim().slice(0, 300);

/** Sets what this process's locks say it is doing (the CLI sets its command line). */
export function setLockCommand(command: string): void {
  defaultCommand = command.slice(0, 300);
}

/** Lock requests of this process run one at a time (they are short: a few system calls each). */
let queue: Promise<unknown> = Promise.resolve();
function serialized<T>(fn: () => Promise<T>): Promise<T> {
  const run = queue.then(fn, fn);
  queue = run.catch(() => undefined);
  return run;
}

/**
 * Takes the lock at once or throws DiskchainError('LOCKED', message naming the holder,
 * { file, holder?: LockHolder, heldBy: 'diskchain' | 'qemu' | 'unknown' }).
 */
export function lockFile(path: string, mode: LockMode, options: LockOptions = {}): Promise<FileLock> {
  return serialized(() => acquire(path, mode, options));
}

async function acquire(path: string, mode: LockMode, options: LockOptions): Promise<FileLock> {
  const fh = await openForLock(path, mode);
  let keep = false;
  try {
    const s = await fh.stat({ bigint: true });
    if (s.isDirectory()) throw notAFile(path);
    const key: FileKey = { dev: s.dev, ino: s.ino };
    const handle: Handle = { mode, command: options.command ?? defaultCommand, since: new Date().toISOString(), sole: mode === 'write' && (options.sole ?? false) };
    let entry = entries.get(keyText(key));
    if (!entry) {
      entry = { key, path, fh, writableFd: mode === 'write', held: mode, handles: new Set() };
      await transition(entry, undefined, mode);
      keep = true;
      entries.set(keyText(key), entry);
    } else {
      if (handle.sole) {
        const other = [...entry.handles].find((h) => h.sole);
        if (other) {
          throw new DiskchainError('LOCKED', `${path} is already open for writing in this process (${other.command}, since ${other.since}); one file is written through one handle at a time`, {
            file: path,
            holder: { pid: process.pid, command: other.command, since: other.since },
            heldBy: 'diskchain',
          });
        }
      }
      if (mode === 'write' && entry.held === 'read') {
        if (!entry.writableFd) {
          await moveToWritableDescription(entry, fh);
          keep = true;
        }
        await transition(entry, 'read', 'write');
        entry.held = 'write';
      }
    }
    entry.handles.add(handle);
    publish();
    return makeLock(entry, handle, path);
  } finally {
    if (!keep) await fh.close().catch(() => undefined);
  }
}

async function openForLock(path: string, mode: LockMode): Promise<FileHandle> {
  // O_NONBLOCK: opening a FIFO must not hang. A writer's descriptor is opened read-write because an
  // exclusive request needs one; a reader's stays read-only (it may not be allowed more).
  const flags = (mode === 'write' ? constants.O_RDWR : constants.O_RDONLY) | constants.O_NONBLOCK;
  try {
    return await open(path, flags);
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException).code;
    if (errno === 'EISDIR') throw notAFile(path);
    throw new DiskchainError('IO', `cannot open file: ${e instanceof Error ? e.message : String(e)}`, { file: path, errno }, { cause: e });
  }
}

function makeLock(entry: Entry, handle: Handle, path: string): FileLock {
  let released = false;
  return {
    path,
    mode: handle.mode,
    dev: entry.key.dev,
    ino: entry.key.ino,
    release: () =>
      serialized(async () => {
        if (released) return;
        released = true;
        entry.handles.delete(handle);
        if (entry.handles.size === 0) {
          entries.delete(keyText(entry.key));
          await entry.fh.close().catch(() => undefined);
        } else if (entry.held === 'write' && ![...entry.handles].some((h) => h.mode === 'write')) {
          // Back to read: never conflicts (only drops or weakens this description's locks).
          await transition(entry, 'write', 'read');
          entry.held = 'read';
        }
        publish();
      }),
  };
}

/**
 * A read lock taken on a read-only descriptor is being upgraded: the locks move to `rw`, a read-write
 * descriptor of the same file. The two descriptions would conflict with each other, so the reader's
 * locks move first (DISKCHAIN last, for an instant free: another diskchain writer that takes it then
 * still fails on byte 201, which `rw` holds throughout, and lets go).
 */
async function moveToWritableDescription(entry: Entry, rw: FileHandle): Promise<void> {
  const locks = ofdLocks();
  const read = spec('read');
  for (const b of read.shared) if (b !== DISKCHAIN_BYTE && !locks.tryLock(rw.fd, b, false)) throw await lockedError(entry.path, entry.key, 'write');
  locks.unlock(entry.fh.fd, DISKCHAIN_BYTE);
  if (!(await retrying(() => locks.tryLock(rw.fd, DISKCHAIN_BYTE, false)))) {
    // Someone took it in the instant it was free: keep the old description, which still holds the rest.
    for (const b of read.shared) locks.unlock(rw.fd, b);
    // Taking our share back can only fail while that writer is between its two steps; it then fails on 201.
    await retrying(() => locks.tryLock(entry.fh.fd, DISKCHAIN_BYTE, false));
    throw await lockedError(entry.path, entry.key, 'write');
  }
  await entry.fh.close();
  entry.fh = rw;
  entry.writableFd = true;
}

const RETRY_DELAYS_MS = [0, 5, 10, 20, 40, 80];

/** Another diskchain's check holds a byte for an instant: a refusal is believed only when it lasts. */
async function retrying(attempt: () => boolean | Promise<boolean>): Promise<boolean> {
  for (const ms of RETRY_DELAYS_MS) {
    if (ms > 0) await new Promise((r) => setTimeout(r, ms));
    if (await attempt()) return true;
  }
  return false;
}

/** Moves the description's locks from `from` (undefined: none) to `to`, or throws LOCKED leaving `from` as it was. */
async function transition(entry: Entry, from: LockMode | undefined, to: LockMode): Promise<void> {
  const ok = await retrying(() => tryTransition(entry, from, to));
  if (!ok) throw await lockedError(entry.path, entry.key, to);
}

async function tryTransition(entry: Entry, from: LockMode | undefined, to: LockMode): Promise<boolean> {
  const locks = ofdLocks();
  const fd = entry.fh.fd;
  const want = spec(to);
  const had = from ? spec(from) : undefined;
  const restore = (): false => {
    for (const b of [...want.shared, ...want.exclusive]) if (!had || (!had.shared.includes(b) && !had.exclusive.includes(b))) locks.unlock(fd, b);
    if (had) {
      for (const b of had.shared) locks.tryLock(fd, b, false);
      for (const b of had.exclusive) locks.tryLock(fd, b, true);
    }
    return false;
  };
  for (const b of want.exclusive) if (!locks.tryLock(fd, b, true)) return restore();
  for (const b of want.shared) if (!locks.tryLock(fd, b, false)) return restore();
  if (had) for (const b of [...had.shared, ...had.exclusive]) if (!want.shared.includes(b) && !want.exclusive.includes(b)) locks.unlock(fd, b);
  if (from === 'write' && to === 'read') return true; // giving up rights needs no check
  if (to === 'write') {
    for (const b of want.free) {
      if (!locks.tryLock(fd, b, true)) return restore();
      if (want.shared.includes(b)) locks.tryLock(fd, b, false);
      else locks.unlock(fd, b);
    }
    return true;
  }
  // A reader may hold a read-only descriptor, on which the kernel refuses exclusive requests: it looks.
  const records = locksOn(entry.key);
  if (records && want.free.some((b) => records.some((r) => covers(r, b)))) return restore();
  return true;
}

const covers = (r: LockRecord, b: number): boolean => r.start <= b && b <= r.end;

/** The LOCKED error for `path`, naming who holds it as far as /proc shows. */
async function lockedError(path: string, key: FileKey, mode: LockMode): Promise<DiskchainError> {
  const records = locksOn(key) ?? [];
  const pidsAt = (base: number): number[] =>
    records.filter((r) => r.start >= base && r.start < base + PID_SPAN).map((r) => r.start - base).filter((pid) => pid !== process.pid);
  const writers = pidsAt(WRITER_PID_BASE);
  const conflicting = mode === 'write' ? [...writers, ...pidsAt(READER_PID_BASE)] : writers;
  const purpose = mode === 'write' ? 'for writing' : 'for reading';
  const readHint = mode === 'read' ? '; to read it anyway, pass --force-share (-U): what you read may change under you' : '';
  if (conflicting.length > 0) {
    const pid = conflicting[0]!;
    const holder = describeHolder(pid, key);
    const how = writers.includes(pid) ? 'is writing it' : 'is reading it';
    return new DiskchainError('LOCKED', `cannot take ${path} ${purpose}: diskchain (pid ${pid}: ${holder.command}, since ${holder.since}) ${how}${readHint}`, { file: path, holder, heldBy: 'diskchain' });
  }
  if (records.some((r) => QEMU_BYTES.some((b) => covers(r, b)))) {
    const pid = (await qemuProcessesWith(key))[0];
    const holder = pid !== undefined ? describeHolder(pid, key) : undefined;
    const who = holder ? `QEMU (pid ${holder.pid}: ${holder.command}, since ${holder.since})` : 'QEMU (or another program that takes QEMU\'s image locks; its process is not visible to this user)';
    return new DiskchainError('LOCKED', `cannot take ${path} ${purpose}: ${who} has it open${readHint}`, { file: path, ...(holder ? { holder } : {}), heldBy: 'qemu' });
  }
  return new DiskchainError('LOCKED', `cannot take ${path} ${purpose}: another process holds a conflicting lock on it${readHint}`, { file: path, heldBy: 'unknown' });
}

function publish(): void {
  const held: HeldLock[] = [];
  for (const e of entries.values()) {
    const h = [...e.handles].find((x) => x.mode === e.held) ?? [...e.handles][0];
    if (h) held.push({ file: e.path, key: keyText(e.key), mode: e.held, command: h.command, since: h.since });
  }
  publishHeld(held);
}
