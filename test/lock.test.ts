/**
 * The lock primitive (io/lock.ts): diskchain against diskchain in other processes, a holder killed
 * with SIGKILL, locks inside one process, and QEMU (a guest's drive, qemu-io, qemu-img) both ways.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDisk } from '../src/chain/open-disk.js';
import { isDiskchainError } from '../src/io/errors.js';
import { lockFile, type LockMode } from '../src/io/lock.js';
import { holdLock, startQemuIo, startQemuVm } from './helpers/locks.js';
import { requireOracle } from './helpers/oracles.js';
import { MIB, tempDir } from './helpers/vhdx-util.js';

/** Expects lockFile to refuse with LOCKED, held by `heldBy`, and returns the error's details. */
async function refused(path: string, mode: LockMode, heldBy: string): Promise<{ holder?: { pid: number; command: string; since: string }; message: string }> {
  let details: { holder?: { pid: number; command: string; since: string }; message: string } | undefined;
  await assert.rejects(lockFile(path, mode), (e: unknown) => {
    assert.ok(isDiskchainError(e), String(e));
    assert.equal(e.code, 'LOCKED', e.message);
    assert.equal(e.details.heldBy, heldBy, e.message);
    assert.equal(e.details.file, path);
    details = { ...(e.details.holder ? { holder: e.details.holder as { pid: number; command: string; since: string } } : {}), message: e.message };
    return true;
  });
  return details!;
}

function plainFile(dir: string, name: string): string {
  const path = join(dir, name);
  writeFileSync(path, new Uint8Array(64 * 1024));
  return path;
}

test('a writer in another process keeps out writers and readers, and the refusal names it (pid, command, since)', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = plainFile(dir, 'disk.img');
    const holder = await holdLock(path, 'write', 'diskchain write disk.img --offset 0');
    try {
      const w = await refused(path, 'write', 'diskchain');
      assert.equal(w.holder?.pid, holder.pid);
      assert.equal(w.holder?.command, 'diskchain write disk.img --offset 0');
      assert.ok(!Number.isNaN(Date.parse(w.holder!.since)), w.holder!.since);
      assert.match(w.message, new RegExp(`pid ${holder.pid}.*is writing it`));
      const r = await refused(path, 'read', 'diskchain');
      assert.match(r.message, /--force-share/);
    } finally {
      await holder.release();
    }
    const lock = await lockFile(path, 'write');
    await lock.release();
  } finally {
    cleanup();
  }
});

test('readers share a file; a reader keeps writers out until it ends', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = plainFile(dir, 'base.img');
    const reader = await holdLock(path, 'read', 'diskchain convert base.img out.vhdx');
    try {
      const mine = await lockFile(path, 'read');
      const w = await refused(path, 'write', 'diskchain');
      assert.equal(w.holder?.pid, reader.pid);
      assert.match(w.message, /is reading it/);
      await mine.release();
      const second = await holdLock(path, 'read', 'a second reader');
      await second.release();
    } finally {
      await reader.release();
    }
    await (await lockFile(path, 'write')).release();
  } finally {
    cleanup();
  }
});

test('a holder killed with SIGKILL leaves no lock behind: the next writer takes the file at once', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = plainFile(dir, 'disk.img');
    for (const mode of ['write', 'read'] as const) {
      const holder = await holdLock(path, mode, `dies holding ${mode}`);
      await refused(path, 'write', 'diskchain');
      await holder.kill();
      const lock = await lockFile(path, 'write');
      await lock.release();
    }
  } finally {
    cleanup();
  }
});

test('locks of one process share a file; a second sole writer in the process is refused; releasing the last writer leaves a reader', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const path = plainFile(dir, 'disk.img');
    // read first, on a read-only descriptor, then upgraded to write in place of it
    const read = await lockFile(path, 'read');
    const op = await lockFile(path, 'write', { command: 'merge (operation)' });
    const open1 = await lockFile(path, 'write', { sole: true, command: 'open for writing' });
    await assert.rejects(lockFile(path, 'write', { sole: true }), (e: unknown) => {
      assert.ok(isDiskchainError(e) && e.code === 'LOCKED', String(e));
      assert.equal((e.details.holder as { pid: number }).pid, process.pid);
      assert.match(e.message, /already open for writing in this process \(open for writing/);
      return true;
    });
    const other = await holdLock(path, 'read', 'reader').catch((e: Error) => e);
    assert.ok(other instanceof Error, 'another process cannot read while this one writes');
    await open1.release();
    await op.release();
    // only the read lock is left: another reader gets in, a writer does not
    const reader = await holdLock(path, 'read', 'reader');
    await reader.release();
    await assert.rejects(holdLock(path, 'write', 'writer'));
    await read.release();
    const writer = await holdLock(path, 'write', 'writer');
    await writer.release();
  } finally {
    cleanup();
  }
});

test('QEMU running a guest on a VHDX: diskchain cannot take it for writing or reading, and the refusal names QEMU', async (t) => {
  if (!requireOracle(t, 'qemu-system-x86_64')) return;
  const { dir, cleanup } = tempDir();
  try {
    const path = join(dir, 'guest.vhdx');
    await (await createDisk(path, 'vhdx', { diskType: 'dynamic', virtualSize: 64 * MIB })).close();
    const vm = await startQemuVm(path, 'vhdx');
    try {
      const w = await refused(path, 'write', 'qemu');
      assert.equal(w.holder?.pid, vm.pid);
      assert.match(w.holder!.command, /^qemu-system-x86_64 /);
      assert.match(w.message, new RegExp(`QEMU \\(pid ${vm.pid}`));
      await refused(path, 'read', 'qemu');
    } finally {
      await vm.stop();
    }
    await (await lockFile(path, 'write')).release();
  } finally {
    cleanup();
  }
});

test('QEMU reading an image (qemu-io -r) lets diskchain read it but not write it', async (t) => {
  if (!requireOracle(t, 'qemu-io')) return;
  const { dir, cleanup } = tempDir();
  try {
    const path = join(dir, 'base.vhdx');
    await (await createDisk(path, 'vhdx', { diskType: 'dynamic', virtualSize: 64 * MIB })).close();
    const io = await startQemuIo(path, 'vhdx', true);
    try {
      await (await lockFile(path, 'read')).release();
      const w = await refused(path, 'write', 'qemu');
      assert.equal(w.holder?.pid, io.pid);
    } finally {
      await io.stop();
    }
  } finally {
    cleanup();
  }
});

test('while diskchain writes an image, qemu-io and qemu-img cannot get its lock; while diskchain reads it, QEMU may read but not write', async (t) => {
  if (!requireOracle(t, 'qemu-io') || !requireOracle(t, 'qemu-img')) return;
  const { dir, cleanup } = tempDir();
  try {
    const path = join(dir, 'disk.vhdx');
    await (await createDisk(path, 'vhdx', { diskType: 'dynamic', virtualSize: 64 * MIB })).close();
    const qemuWrite = () => spawnSync('qemu-io', ['-f', 'vhdx', path, '-c', 'write 0 512'], { encoding: 'utf8' });
    const qemuInfo = (...extra: string[]) => spawnSync('qemu-img', ['info', ...extra, path], { encoding: 'utf8' });
    const writer = await lockFile(path, 'write');
    try {
      const w = qemuWrite();
      assert.notEqual(w.status, 0);
      assert.match(w.stderr, /Failed to get "write" lock/);
      const i = qemuInfo();
      assert.notEqual(i.status, 0);
      assert.match(i.stderr, /Failed to get shared "write" lock/);
      assert.equal(qemuInfo('-U').status, 0, 'qemu-img -U (force share) still reads it');
    } finally {
      await writer.release();
    }
    const reader = await lockFile(path, 'read');
    try {
      const w = qemuWrite();
      assert.notEqual(w.status, 0);
      assert.match(w.stderr, /Failed to get "write" lock/);
      assert.equal(qemuInfo().status, 0, qemuInfo().stderr);
    } finally {
      await reader.release();
    }
    assert.equal(qemuWrite().status, 0, 'once released, QEMU writes it');
  } finally {
    cleanup();
  }
});
