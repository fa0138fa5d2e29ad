/** Processes that hold locks for the locking tests: a diskchain holder, QEMU, and a wait on /proc/locks. */
import { spawn, type ChildProcess } from 'node:child_process';
import { statSync } from 'node:fs';
import { locksOn, type LockRecord } from '../../src/io/lock-holders.js';
import type { LockMode } from '../../src/io/lock.js';

const HOLDER = new URL('./lock-holder.js', import.meta.url).pathname;

export interface Held {
  pid: number;
  /** Closes the holder's stdin: it releases and exits. */
  release(): Promise<void>;
  /** SIGKILL: the process dies holding the lock. */
  kill(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

/** Starts a process that takes `mode` on `path` and holds it; rejects if it could not. */
export async function holdLock(path: string, mode: LockMode, command: string): Promise<Held> {
  const child = spawn(process.execPath, [HOLDER, path, mode, command], { stdio: ['pipe', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
    child.once('exit', () => resolve(out.trim() || 'exited'));
  });
  if (line !== 'locked') {
    child.kill('SIGKILL');
    throw new Error(`the holder could not take ${mode} on ${path}: ${line}`);
  }
  return {
    pid: child.pid!,
    release: async () => {
      child.stdin!.end();
      await exited(child);
    },
    kill: async () => {
      child.kill('SIGKILL');
      await exited(child);
    },
  };
}

/** Waits until /proc/locks shows a lock on `path` matching `want` (QEMU takes its locks a moment after it starts). */
export async function waitForLocks(path: string, want: (records: LockRecord[]) => boolean, ms = 20_000): Promise<void> {
  const s = statSync(path, { bigint: true });
  const deadline = Date.now() + ms;
  for (;;) {
    const records = locksOn({ dev: s.dev, ino: s.ino }) ?? [];
    if (want(records)) return;
    if (Date.now() > deadline) throw new Error(`no lock appeared on ${path}: ${JSON.stringify(records)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export const holds = (byte: number) => (records: LockRecord[]): boolean => records.some((r) => r.start <= byte && byte <= r.end);

/** A process started for a test, killed (and waited for) at the end. */
export interface Started {
  pid: number;
  stop(): Promise<void>;
}

export function startProcess(command: string, args: string[]): Started {
  const child = spawn(command, args, { stdio: 'ignore' });
  return {
    pid: child.pid!,
    stop: async () => {
      child.kill('SIGKILL');
      await exited(child);
    },
  };
}

/** QEMU with the image as a guest's drive, stopped before its first instruction (-S), TCG: it holds the image for writing. */
export async function startQemuVm(image: string, format: 'vhdx' | 'vpc' | 'raw'): Promise<Started> {
  const vm = startProcess('qemu-system-x86_64', ['-S', '-accel', 'tcg', '-nodefaults', '-display', 'none', '-m', '32', '-drive', `file=${image},format=${format},if=virtio`]);
  await waitForLocks(image, holds(101));
  return vm;
}

/** qemu-io holding the image open (read-only with `readOnly`) until stopped. */
export async function startQemuIo(image: string, format: 'vhdx' | 'vpc' | 'raw', readOnly: boolean): Promise<Started> {
  const io = startProcess('qemu-io', ['-f', format, ...(readOnly ? ['-r'] : []), image, '-c', 'sleep 600000']);
  await waitForLocks(image, holds(100));
  return io;
}
