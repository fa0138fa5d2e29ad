/**
 * Locking applied to the commands (docs/locking.md, "What takes which lock"), with real processes:
 * the built CLI against itself, against QEMU and qemu-img, a writer killed with SIGKILL, a merge in
 * progress or left pending, and a served chain that keeps a merge out.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createChild, createDisk } from '../src/api/create.js';
import { openChain, openDisk } from '../src/chain/open-chain.js';
import { isDiskchainError } from '../src/io/errors.js';
import { WRITER_PID_BASE, READER_PID_BASE } from '../src/io/lock.js';
import { merge } from '../src/ops/merge.js';
import { abandonMerge } from '../src/ops/merge-abandon.js';
import type { ByteSource } from '../src/io/byte-source.js';
import { buildChain } from './helpers/merge-chain.js';
import { fullDiskAfter, intercepting } from './helpers/full-disk.js';
import { holds, startQemuIo, startQemuVm, waitForLocks } from './helpers/locks.js';
import { requireOracle } from './helpers/oracles.js';
import { CLI, serveCli } from './helpers/serve-cli.js';
import { MIB, randomBytesFrom, tempDir } from './helpers/vhdx-util.js';

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

function cli(...args: string[]): Ran {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** `diskchain write` reading its bytes from a pipe the test holds open: it holds the leaf's lock until `finish`. */
function pendingWrite(disk: string, offset: number): { proc: ChildProcess; finish(data: Uint8Array): Promise<Ran> } {
  const proc = spawn(process.execPath, [CLI, 'write', disk, '--offset', String(offset)], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    proc,
    finish: async (data) => {
      proc.stdin!.end(data);
      return { status: await exited, stdout, stderr };
    },
  };
}

async function readBytes(disk: string, offset: number, length: number): Promise<Uint8Array> {
  const chain = await openChain(disk);
  try {
    const out = new Uint8Array(length);
    await chain.read(out, offset);
    return out;
  } finally {
    await chain.close();
  }
}

async function newVhdx(dir: string, name: string): Promise<string> {
  const path = join(dir, name);
  await (await createDisk(path, 'vhdx', { diskType: 'dynamic', virtualSize: 16 * MIB })).close();
  return path;
}

test('two concurrent `diskchain write` into one VHDX: the second is refused with LOCKED naming the first (exit 4); the first completes', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const disk = await newVhdx(dir, 'disk.vhdx');
    const first = pendingWrite(disk, 0);
    await waitForLocks(disk, holds(WRITER_PID_BASE + first.proc.pid!));
    const second = cli('write', disk, '--offset', '0', '--input', '/dev/null');
    assert.equal(second.status, 4, second.stderr);
    assert.match(second.stderr, new RegExp(`LOCKED: cannot take .*disk\\.vhdx for writing: diskchain \\(pid ${first.proc.pid}: diskchain write .*disk\\.vhdx --offset 0, since .*\\) is writing it`));
    assert.equal(second.stderr.trim().split('\n').length, 1, 'one line, no stack trace');
    // A reader is refused too (what it would read may be torn), and -U reads anyway with a warning.
    const info = cli('info', disk);
    assert.equal(info.status, 4, info.stderr);
    assert.match(info.stderr, /--force-share/);
    const shared = cli('info', '-U', disk);
    assert.equal(shared.status, 0, shared.stderr);
    assert.match(shared.stderr, /warning: --force-share/);
    const data = randomBytesFrom(1, 64 * 1024);
    const done = await first.finish(data);
    assert.equal(done.status, 0, done.stderr);
    assert.deepEqual(await readBytes(disk, 0, data.length), data, 'the first write is all there');
    assert.equal(cli('check', disk).status, 0);
  } finally {
    cleanup();
  }
});

test('a writer killed with SIGKILL leaves no lock: the next write takes the file at once', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const disk = await newVhdx(dir, 'disk.vhdx');
    const first = pendingWrite(disk, 0);
    await waitForLocks(disk, holds(WRITER_PID_BASE + first.proc.pid!));
    first.proc.kill('SIGKILL');
    await first.finish(new Uint8Array(0));
    const data = randomBytesFrom(2, 4096);
    const r = spawnSync(process.execPath, [CLI, 'write', disk, '--offset', '4096'], { input: data, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(await readBytes(disk, 4096, data.length), data);
  } finally {
    cleanup();
  }
});

test('a chain being read keeps its parents from being written; readers of one chain share it', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const base = await newVhdx(dir, 'base.vhdx');
    const child = join(dir, 'child.avhdx');
    await (await createChild(child, base)).close();
    const reader = pendingWrite(child, 0); // writes the child, reads through the base
    await waitForLocks(base, holds(READER_PID_BASE + reader.proc.pid!));
    const w = cli('write', base, '--offset', '0', '--input', '/dev/null', '--ignore-dependents');
    assert.equal(w.status, 4, w.stderr);
    assert.match(w.stderr, /LOCKED: cannot take .*base\.vhdx for writing: diskchain \(pid \d+: diskchain write .*child\.avhdx.*is reading it/);
    assert.equal(cli('info', base).status, 0, 'another reader shares the base');
    assert.equal((await reader.finish(new Uint8Array(512))).status, 0);
  } finally {
    cleanup();
  }
});

test('diskchain refuses a file a running QEMU holds (a guest\'s drive: -S, TCG), for writing and for reading; -U reads it', async (t) => {
  if (!requireOracle(t, 'qemu-system-x86_64')) return;
  const { dir, cleanup } = tempDir();
  try {
    const disk = await newVhdx(dir, 'guest.vhdx');
    const vm = await startQemuVm(disk, 'vhdx');
    try {
      const w = spawnSync(process.execPath, [CLI, 'write', disk, '--offset', '0'], { input: new Uint8Array(512), encoding: 'utf8' });
      assert.equal(w.status, 4, w.stderr);
      assert.match(w.stderr, new RegExp(`LOCKED: cannot take .*guest\\.vhdx for writing: QEMU \\(pid ${vm.pid}: qemu-system-x86_64 `));
      const r = cli('read', disk, '--length', '512');
      assert.equal(r.status, 4, r.stderr);
      assert.match(r.stderr, /QEMU .*has it open.*--force-share/);
      const c = cli('check', disk);
      assert.equal(c.status, 4, c.stderr);
      const shared = cli('read', '-U', disk, '--length', '512');
      assert.equal(shared.status, 0, shared.stderr);
      await assert.rejects(merge(disk), (e: unknown) => isDiskchainError(e) && (e.code === 'LOCKED' || e.code === 'INVALID_ARGUMENT'));
    } finally {
      await vm.stop();
    }
    assert.equal(cli('write', disk, '--offset', '0', '--input', '/dev/null').status, 0, 'once QEMU is gone, the write goes ahead');
  } finally {
    cleanup();
  }
});

test('diskchain refuses to write a file qemu-io holds; qemu-img refuses a file diskchain is writing', async (t) => {
  if (!requireOracle(t, 'qemu-io') || !requireOracle(t, 'qemu-img')) return;
  const { dir, cleanup } = tempDir();
  try {
    const disk = await newVhdx(dir, 'disk.vhdx');
    const io = await startQemuIo(disk, 'vhdx', false);
    try {
      const w = cli('write', disk, '--offset', '0', '--input', '/dev/null');
      assert.equal(w.status, 4, w.stderr);
      assert.match(w.stderr, /LOCKED: .*QEMU \(pid \d+: qemu-io /);
    } finally {
      await io.stop();
    }
    const writer = pendingWrite(disk, 0);
    await waitForLocks(disk, holds(WRITER_PID_BASE + writer.proc.pid!));
    const info = spawnSync('qemu-img', ['info', disk], { encoding: 'utf8' });
    assert.notEqual(info.status, 0);
    assert.match(info.stderr, /Failed to get shared "write" lock/);
    const qw = spawnSync('qemu-io', ['-f', 'vhdx', disk, '-c', 'write 0 512'], { encoding: 'utf8' });
    assert.match(qw.stderr + qw.stdout, /Failed to get "write" lock/);
    assert.equal((await writer.finish(new Uint8Array(512))).status, 0);
  } finally {
    cleanup();
  }
});

test('a write is refused during a merge (the merge holds its files) and after an interrupted one (the journal reserves them)', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const [, c1, c2] = await buildChain(join(dir, 'w'), 'vhdx', 21);
    let during: Ran | undefined;
    await merge(c2!, {
      keep: true,
      onPhase: (phase) => {
        if (phase === 'copy') during ??= cli('write', c2!, '--offset', '0', '--input', '/dev/null', '--ignore-dependents');
      },
    });
    assert.equal(during?.status, 4, during?.stderr);
    assert.match(during!.stderr, /LOCKED: cannot take .*c2\.avhdx for writing: diskchain \(pid \d+/);

    const [, d1, d2] = await buildChain(join(dir, 'v'), 'vhdx', 22);
    await assert.rejects(merge(d2!, { wrapTargetSource: fullDiskAfter(0), checkpointBytes: MIB }), (e: unknown) => isDiskchainError(e) && e.code === 'NO_SPACE');
    for (const file of [d2!, d1!]) {
      const w = cli('write', file, '--offset', '0', '--input', '/dev/null', '--ignore-dependents');
      assert.equal(w.status, 4, w.stderr);
      assert.match(w.stderr, new RegExp(`LOCKED: cannot write .*: a merge of .*c2\\.avhdx into .*c1\\.avhdx is pending \\(phase copy, .*run 'diskchain merge .*c2\\.avhdx' to finish it, or 'diskchain merge --abandon .*c2\\.avhdx'`));
    }
    assert.equal(cli('read', d2!, '--length', '512').status, 0, 'reading a reserved chain is fine');
    await merge(d2!);
    assert.equal(cli('write', d1!, '--offset', '0', '--input', '/dev/null', '--ignore-dependents').status, 0, 'once the merge is done, its target takes writes');
    void c1;
  } finally {
    cleanup();
  }
});

test('a served chain keeps a merge of its leaf out; the merge goes ahead once serving stops', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const [, , c2] = await buildChain(join(dir, 'w'), 'vhd', 23);
    const served = await serveCli([c2!, '--socket', join(dir, 'nbd.sock')]);
    try {
      await assert.rejects(merge(c2!), (e: unknown) => {
        assert.ok(isDiskchainError(e), String(e));
        assert.equal(e.code, 'LOCKED', e.message);
        assert.match(e.message, new RegExp(`diskchain \\(pid ${served.proc.pid}: diskchain serve .*\\) is reading it`));
        return true;
      });
    } finally {
      await served.stop();
    }
    const r = await merge(c2!);
    assert.equal(r.merged.length, 1);
  } finally {
    cleanup();
  }
});

test('one process: a second merge into the same target, or an abandon of the running merge, is refused while it runs', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const [, , c2, c3] = await buildChain(join(dir, 'w'), 'vhd', 24);
    const refusals: string[] = [];
    let asked = false;
    const probing = (inner: ByteSource): ByteSource =>
      intercepting(inner, {
        write: async (d, o) => {
          if (!asked) {
            asked = true;
            for (const attempt of [() => merge(c2!), () => abandonMerge(c2!)]) {
              await attempt().then(
                () => refusals.push('accepted'),
                (e: unknown) => refusals.push(isDiskchainError(e) ? `${e.code}: ${e.message}` : String(e)),
              );
            }
          }
          await inner.write(d, o);
        },
      });
    const r = await merge(c2!, { wrapTargetSource: probing });
    assert.equal(r.merged.length, 1);
    assert.equal(refusals.length, 2);
    for (const line of refusals) assert.match(line, /^LOCKED: a merge into the same target is running in this process/);
    void c3;
  } finally {
    cleanup();
  }
});

test('one process: a second writable open of a file is refused; read-only opens beside a writable one share it', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const disk = await newVhdx(dir, 'disk.vhdx');
    const w = await openDisk(disk, { writable: true });
    try {
      await assert.rejects(openDisk(disk, { writable: true }), (e: unknown) => isDiskchainError(e) && e.code === 'LOCKED' && /already open for writing in this process/.test(e.message));
      const r = await openDisk(disk);
      await r.close();
    } finally {
      await w.close();
    }
    await (await openDisk(disk, { writable: true })).close();
  } finally {
    cleanup();
  }
});
