/**
 * serve --vm: every disk of a VM that is not running as a named export (its id). Now writable with
 * `writable` (what a client writes reads back through the VM's own chain afterwards), a checkpoint
 * read-only (writes refused, its frozen content served); the VM's lock held while served.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { createVm, withVm } from '../src/api/vm.js';
import { serveVm } from '../src/api/serve-vm.js';
import { isDiskchainError } from '../src/io/errors.js';
import { tempFolder } from './helpers/guest.js';
import { NbdClient } from './helpers/nbd-client.js';

test('serve --vm: each disk a named export; Now writable, a checkpoint read-only; the VM locked meanwhile', { timeout: 60_000 }, async () => {
  const { dir, remove } = await tempFolder('dc-servevm-');
  try {
    const folder = join(dir, 'vm');
    await createVm(folder, { newDisks: [{ size: 4 << 20 }, { size: 8 << 20 }] });
    const cp = await withVm(folder, { command: 'test' }, (vm) => vm.checkpoint({ name: 'empty' }));
    const socket = join(dir, 'nbd.sock');
    const marks = [Buffer.alloc(4096, 0x11), Buffer.alloc(4096, 0x22)];

    const now = await serveVm(folder, { socket, writable: true });
    try {
      assert.deepEqual(now.exports.map((e) => [e.name, e.size, e.readOnly]), [['disk0', 4 << 20, false], ['disk1', 8 << 20, false]]);
      await assert.rejects(withVm(folder, { command: 'test' }, async () => undefined), (e: unknown) => isDiskchainError(e) && e.code === 'VM_BUSY');
      for (const [i, name] of ['disk0', 'disk1'].entries()) {
        const c = await NbdClient.connect(socket, { exportName: name });
        await c.write(65536, marks[i]!);
        assert.deepEqual(await c.read(65536, 4096), marks[i]);
        await c.disconnect();
      }
    } finally {
      await now.close();
    }
    for (const [i, id] of ['disk0', 'disk1'].entries()) {
      const chain = await withVm(folder, { lock: 'none', command: 'test' }, (vm) => vm.openDisk(id));
      const b = new Uint8Array(4096);
      await chain.read(b, 65536);
      await chain.close();
      assert.deepEqual(Buffer.from(b), marks[i], `Now's ${id} holds what the client wrote`);
    }

    await assert.rejects(serveVm(folder, { socket, writable: true, checkpoint: cp.id }), (e: unknown) => isDiskchainError(e) && e.code === 'READ_ONLY');
    const frozen = await serveVm(folder, { socket, checkpoint: 'empty' });
    try {
      assert.ok(frozen.exports.every((e) => e.readOnly));
      const c = await NbdClient.connect(socket, { exportName: 'disk1' });
      assert.deepEqual(await c.read(65536, 4096), Buffer.alloc(4096), "the checkpoint's disk as it froze");
      await assert.rejects(c.write(0, Buffer.alloc(512, 1)), /error 1\b/);
      await c.disconnect();
    } finally {
      await frozen.close();
    }
  } finally {
    await remove();
  }
});
