/**
 * The real thing: qemu-system-x86_64 (TCG) boots the test guest (scripts/build-guest.sh) from a
 * differencing VHDX chain served by `diskchain serve --writable`, and the guest writes into it (its
 * boot record and a ticking counter, each write flushed with dd conv=fsync). After QEMU quits and the
 * server stops, the checkpoint's parent is byte for byte unchanged, the leaf holds what the guest
 * wrote, diskchain and libvhdi read the same records through the chain, and a second boot from the
 * same served chain finds the first boot's record.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { checkDisk } from '../src/api/check.js';
import { createChild, createDisk } from '../src/api/create.js';
import { openChain } from '../src/chain/open-chain.js';
import { GUEST_LAYOUT, GuestVm, parseGuestDisk, readGuestView, requireGuest, tempFolder, type GuestDiskView } from './helpers/guest.js';
import { requireOracle } from './helpers/oracles.js';
import { serveCli } from './helpers/serve-cli.js';
import { describeFindings, MIB, randomBytesFrom } from './helpers/vhdx-util.js';

const fileSha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

async function guestView(leaf: string): Promise<GuestDiskView> {
  return readGuestView(await openChain(leaf));
}

test('QEMU boots the test guest from a served differencing VHDX chain and writes into the checkpoint\'s child', { timeout: 240_000 }, async (t) => {
  const image = await requireGuest(t);
  if (!image || !requireOracle(t, 'pyvhdi')) return;
  const { dir, remove } = await tempFolder('diskchain-nbd-boot-');
  let vm: GuestVm | undefined;
  let served: Awaited<ReturnType<typeof serveCli>> | undefined;
  try {
    const base = join(dir, 'system.vhdx');
    const leaf = join(dir, 'system_now.avhdx');
    const marker = randomBytesFrom(81, MIB);
    const b = await createDisk(base, 'vhdx', { diskType: 'dynamic', virtualSize: 8 * MIB, blockSize: MIB });
    await b.write(marker, 4 * MIB); // the parent's own data, past anything the guest writes
    await b.close();
    await (await createChild(leaf, base, { blockSize: MIB })).close();
    const baseSha = fileSha(base);
    const socket = join(dir, 'nbd.sock');

    const ticks: number[] = [];
    for (const boot of [1, 2]) {
      served = await serveCli([leaf, '--socket', socket, '--writable']);
      vm = await GuestVm.start({ image, dir, name: `boot${boot}`, disks: [{ kind: 'nbd', socket }] });
      const ready = await vm.ready(120_000);
      assert.equal(ready.boots, boot, `boot ${boot} read the record the previous boot left`);
      ticks.push(await vm.tickAtLeast(4, 60_000));
      await vm.stop(); // QMP quit: QEMU flushes to the server before it exits
      vm = undefined;
      assert.equal(await served.stop(), 0, served.stderr());
      served = undefined;
    }

    assert.equal(fileSha(base), baseSha, 'the checkpoint (parent) is untouched');
    const view = await guestView(leaf);
    assert.equal(view.boot?.boots, 2);
    assert.ok((view.latest?.tick ?? 0) >= 4, `ticks reached the leaf (${JSON.stringify(view.latest)})`);
    const chain = await openChain(leaf);
    const leafMap = await chain.leaf.map(0, 8 * MIB);
    const tail = new Uint8Array(MIB);
    await chain.read(tail, 4 * MIB);
    await chain.close();
    assert.ok(leafMap.some((e) => e.state === 'data' && e.offset === 0), 'the leaf holds the guest\'s sectors');
    assert.deepEqual(tail, marker, 'the parent still shows through where the guest did not write');
    const report = await checkDisk(leaf);
    assert.ok(report.clean, describeFindings(report.findings));

    // libvhdi reads the same records through the chain.
    const script = 'import sys, pyvhdi\nc = pyvhdi.file(); c.open(sys.argv[1])\np = pyvhdi.file(); p.open(sys.argv[2])\nc.set_parent(p)\nc.seek_offset(0, 0)\nsys.stdout.buffer.write(c.read_buffer(int(sys.argv[3])))\n';
    const viaLibvhdi = execFileSync('/usr/bin/python3', ['-c', script, leaf, base, String(GUEST_LAYOUT.minDiskBytes)], { maxBuffer: 4 * MIB });
    assert.deepEqual(parseGuestDisk(new Uint8Array(viaLibvhdi)), view);
  } finally {
    await vm?.qemu.kill();
    await served?.stop();
    await remove();
  }
});
