/**
 * The QEMU command line (src/vm/qemu-command.ts) and process (src/vm/qemu-process.ts): what the
 * argv says, and what QEMU made of it (asked over QMP with the vCPUs never started, so no guest is
 * needed): the disks (a raw file, an NBD export from qemu-nbd), the sockets (paths with commas), the
 * accelerator; QEMU's own error when it refuses to start; exit detection when it is killed.
 */
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { DiskchainError } from '../src/io/errors.js';
import { qemuArgv, resolveAccel, type QemuConfig } from '../src/vm/qemu-command.js';
import { QemuProcess } from '../src/vm/qemu-process.js';
import { makeRawDisk, tempFolder } from './helpers/guest.js';
import { requireOracle } from './helpers/oracles.js';
import { startQemuNbd, type PeerNbdServer } from './helpers/peer-nbd.js';

const base: QemuConfig = { memoryMiB: 128, boot: { kind: 'disk' }, disks: [{ kind: 'file', path: '/d/a.raw' }], qmpSocket: '/run/q.sock' };
const after = (argv: string[], flag: string): string[] => argv.flatMap((a, i) => (a === flag ? [argv[i + 1]!] : []));

test('qemuArgv: devices, escaping, accelerator, refusals', () => {
  const argv = qemuArgv(
    {
      ...base,
      cpus: 2,
      boot: { kind: 'kernel', kernel: '/k/vmlinuz', initrd: '/k/initrd', append: 'console=ttyS0 panic=-1' },
      disks: [
        { kind: 'nbd', socket: '/run/vm,1/disk0.sock', exportName: 'disk0' },
        { kind: 'file', path: '/d/b.raw', readOnly: true },
      ],
      qmpSocket: '/run/vm,1/qmp.sock',
      serialLog: '/run/vm,1/serial.log',
      guestAgentSocket: '/run/vm,1/qga.sock',
      incoming: 'defer',
      paused: true,
    },
    () => false,
  );
  assert.deepEqual(after(argv, '-accel'), ['tcg']);
  assert.ok(!argv.includes('-cpu'));
  assert.deepEqual(after(argv, '-m'), ['128']);
  assert.deepEqual(after(argv, '-smp'), ['2']);
  assert.deepEqual(after(argv, '-append'), ['console=ttyS0 panic=-1']);
  assert.deepEqual(after(argv, '-nic'), ['none']);
  assert.deepEqual(after(argv, '-incoming'), ['defer']);
  assert.ok(argv.includes('-S') && argv.includes('-nodefaults'));
  const chardevs = after(argv, '-chardev');
  assert.ok(chardevs.includes('socket,id=qmp,path=/run/vm,,1/qmp.sock,server=on,wait=off'));
  assert.ok(chardevs.includes('file,id=serial0,path=/run/vm,,1/serial.log'));
  assert.ok(chardevs.includes('socket,id=qga,path=/run/vm,,1/qga.sock,server=on,wait=off'));
  const blockdevs = after(argv, '-blockdev').map((j) => JSON.parse(j) as Record<string, unknown>);
  assert.deepEqual(blockdevs[0], { driver: 'nbd', 'node-name': 'disk0', server: { type: 'unix', path: '/run/vm,1/disk0.sock' }, export: 'disk0', 'read-only': false });
  assert.deepEqual(blockdevs[1], { driver: 'raw', 'node-name': 'disk1', file: { driver: 'file', filename: '/d/b.raw' }, 'read-only': true });
  const devices = after(argv, '-device').filter((d) => d.startsWith('{')).map((j) => JSON.parse(j) as Record<string, unknown>);
  assert.deepEqual(devices.map((d) => [d.drive, d.werror]), [['disk0', 'enospc'], ['disk1', 'enospc']]);

  const kvm = qemuArgv(base, () => true);
  assert.deepEqual(after(kvm, '-accel'), ['kvm']);
  assert.deepEqual(after(kvm, '-cpu'), ['host']);
  assert.equal(resolveAccel({ accel: 'tcg' }, () => true), 'tcg');
  assert.equal(resolveAccel({}, () => false), 'tcg');
  assert.ok(after(qemuArgv(base, () => false), '-device').some((d) => d.includes('"bootindex":0')));

  const refused = (config: QemuConfig): void => assert.throws(() => qemuArgv(config, () => false), (e: unknown) => e instanceof DiskchainError && e.code === 'INVALID_ARGUMENT');
  refused({ ...base, qmpSocket: `/${'x'.repeat(120)}.sock` });
  refused({ ...base, disks: [{ kind: 'nbd', socket: `/${'x'.repeat(120)}` }] });
  refused({ ...base, memoryMiB: 0 });
  refused({ ...base, cpus: 0 });
  refused({ ...base, disks: [] });
  refused({ ...base, serialLog: '/a\nb' });
});

test('QEMU starts with what the argv says: disks (file and NBD), sockets with commas, tcg', { timeout: 60_000 }, async (t) => {
  if (!requireOracle(t, 'qemu-system-x86_64') || !requireOracle(t, 'qemu-nbd')) return;
  const { dir: top, remove } = await tempFolder();
  const dir = join(top, 'a,b');
  let nbd: PeerNbdServer | undefined;
  let qemu: QemuProcess | undefined;
  try {
    await mkdir(dir);
    const file = await makeRawDisk(join(dir, 'file.raw'), 1 << 20);
    const served = await makeRawDisk(join(dir, 'served.raw'), 2 << 20);
    nbd = await startQemuNbd({ socket: join(dir, 'nbd.sock'), file: served });
    qemu = await QemuProcess.start({
      memoryMiB: 64,
      boot: { kind: 'disk' },
      disks: [{ kind: 'file', path: file }, { kind: 'nbd', socket: nbd.socket }],
      qmpSocket: join(dir, 'qmp.sock'),
      serialLog: join(dir, 'serial.log'),
      guestAgentSocket: join(dir, 'qga.sock'),
      paused: true,
    });
    assert.equal((await qemu.qmp.execute('query-status')).status, 'prelaunch');
    const blocks = await qemu.qmp.execute('query-block');
    const byNode = new Map(blocks.map((b) => [b.inserted?.['node-name'], b.inserted]));
    assert.equal(byNode.get('disk0')?.file, file);
    assert.equal(byNode.get('disk1')?.drv, 'nbd');
    assert.ok(byNode.get('disk1')?.file.includes(nbd.socket), byNode.get('disk1')?.file);
    const chardevs = await qemu.qmp.execute('query-chardev');
    const labels = new Map(chardevs.map((c) => [c.label, c.filename]));
    assert.ok(labels.get('qmp')?.includes(join(dir, 'qmp.sock')));
    assert.ok(labels.get('qga')?.includes(join(dir, 'qga.sock')));
    const accel = (await qemu.qmp.executeUntyped('human-monitor-command', { 'command-line': 'info kvm' })) as string;
    assert.match(accel, resolveAccel({}) === 'kvm' ? /kvm support: enabled/ : /kvm support: disabled/);
    assert.deepEqual(await qemu.stop(), { code: 0, signal: null });
    assert.equal((await qemu.qmp.closed).code, 'QMP_CLOSED');
  } finally {
    await qemu?.kill();
    await nbd?.stop();
    await remove();
  }
});

test('QEMU refusing to start is QEMU_FAILED with its own words; a killed QEMU is seen', { timeout: 60_000 }, async (t) => {
  if (!requireOracle(t, 'qemu-system-x86_64')) return;
  const { dir, remove } = await tempFolder();
  let qemu: QemuProcess | undefined;
  try {
    const config: QemuConfig = { memoryMiB: 64, boot: { kind: 'kernel', kernel: join(dir, 'no-such-kernel') }, disks: [], qmpSocket: join(dir, 'qmp.sock'), paused: true };
    await assert.rejects(QemuProcess.start(config), (e: unknown) => e instanceof DiskchainError && e.code === 'QEMU_FAILED' && /no-such-kernel/.test(e.message));
    await assert.rejects(QemuProcess.start({ ...config, binary: join(dir, 'no-such-qemu') }), (e: unknown) => e instanceof DiskchainError && e.code === 'QEMU_FAILED' && /cannot run/.test(e.message));

    const disk = await makeRawDisk(join(dir, 'd.raw'), 1 << 20);
    qemu = await QemuProcess.start({ memoryMiB: 64, boot: { kind: 'disk' }, disks: [{ kind: 'file', path: disk }], qmpSocket: join(dir, 'qmp.sock'), paused: true });
    assert.equal(qemu.exit, undefined);
    process.kill(qemu.pid, 'SIGKILL');
    assert.deepEqual(await qemu.exited, { code: null, signal: 'SIGKILL' });
    assert.equal((await qemu.qmp.closed).code, 'QMP_CLOSED');
    await assert.rejects(qemu.qmp.execute('query-status'), (e: unknown) => e instanceof DiskchainError && e.code === 'QMP_CLOSED');
  } finally {
    await qemu?.kill();
    await remove();
  }
});
