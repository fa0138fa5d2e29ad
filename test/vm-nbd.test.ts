/**
 * The test guest with its disk served over NBD on a unix socket (nbdkit), and Paused-Critical: when
 * the server answers writes with ENOSPC, QEMU pauses the VM (werror=enospc) and emits
 * BLOCK_IO_ERROR nospace=true; once space is back, `cont` retries the write and the guest goes on.
 */
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BlockIoErrorData } from '../src/vm/qmp-schema.js';
import { GuestVm, makeRawDisk, pollUntil, readGuestDisk, requireGuest, tempFolder } from './helpers/guest.js';
import { requireOracle } from './helpers/oracles.js';
import { startNbdkit, type PeerNbdServer } from './helpers/peer-nbd.js';

test('guest on an NBD disk: ENOSPC pauses it (BLOCK_IO_ERROR nospace), cont after freeing space resumes it', { timeout: 180_000 }, async (t) => {
  if (!requireOracle(t, 'nbdkit')) return;
  const image = await requireGuest(t);
  if (!image) return;
  const { dir, remove } = await tempFolder();
  let server: PeerNbdServer | undefined;
  let vm: GuestVm | undefined;
  try {
    const file = await makeRawDisk(join(dir, 'system.raw'), 1 << 20);
    const full = join(dir, 'disk-is-full');
    server = await startNbdkit({ socket: join(dir, 'nbd.sock'), file, enospcWhileExists: full });
    vm = await GuestVm.start({ image, dir, disks: [{ kind: 'nbd', socket: server.socket }] });
    const ready = await vm.ready();
    assert.equal(ready.boots, 1);
    await vm.tickAtLeast(3);
    // every write went through the server to the file
    const before = await pollUntil(() => readGuestDisk(file), (v) => (v.latest?.tick ?? 0) >= 2, 10_000, 'ticks in the served file');
    assert.deepEqual(before.boot, { boots: 1, id: ready.id });

    const qmp = vm.qemu.qmp;
    const ioError = qmp.waitForEvent<BlockIoErrorData>('BLOCK_IO_ERROR', { timeoutMs: 20_000 });
    const stopped = qmp.waitForEvent('STOP', { timeoutMs: 20_000 });
    await writeFile(full, '');
    const event = await ioError;
    await stopped;
    assert.equal(event.data.nospace, true);
    assert.equal(event.data.operation, 'write');
    assert.equal(event.data.action, 'stop');
    assert.deepEqual(await qmp.execute('query-status'), { running: false, singlestep: false, status: 'io-error' });
    const block = (await qmp.execute('query-block')).find((b) => b.inserted?.['node-name'] === 'disk0');
    assert.equal(block?.['io-status'], 'nospace');
    const pausedAt = (await readGuestDisk(file)).latest!.tick;
    const printed = (await vm.serial.ticks()).length;
    await sleep(700);
    assert.equal((await readGuestDisk(file)).latest!.tick, pausedAt);
    assert.equal((await vm.serial.ticks()).length, printed);

    await rm(full);
    await qmp.execute('cont');
    const after = await pollUntil(() => readGuestDisk(file), (v) => v.latest!.tick >= pausedAt + 3, 20_000, 'ticks after space came back');
    assert.equal(after.latest!.id, ready.id, 'the guest went on (no reboot)');
    // The run state is what tells Paused-Critical is over: QEMU 7.2's cont resets the io-status of
    // named (-drive) block backends only, so a -blockdev disk keeps showing "nospace" (docs/qemu.md).
    assert.equal((await qmp.execute('query-status')).status, 'running');
  } finally {
    await vm?.qemu.kill();
    await server?.stop();
    await remove();
  }
});
