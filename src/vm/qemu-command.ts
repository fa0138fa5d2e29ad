/**
 * The qemu-system-x86_64 command line for a VM, from a plain configuration. Everything QEMU would
 * add on its own is switched off (-nodefaults, -no-user-config, no display, no network unless asked):
 * the VM has exactly the devices listed here, which a restore (-incoming) needs, since the saved
 * device state must meet the same devices.
 *
 * Disks are virtio-blk devices over -blockdev nodes: an NBD export on a unix socket (how diskchain
 * serves a VM its checkpoint chains) or a plain file. With werror=enospc (the default here, as in
 * QEMU) a write failing with ENOSPC pauses the VM and emits BLOCK_IO_ERROR nospace=true: Hyper-V's
 * Paused-Critical.
 *
 * Values inside QEMU's comma-separated options are escaped by doubling commas (QemuOpts); the
 * -blockdev and -device options use QEMU's JSON form, which needs no escaping.
 */
import { accessSync, constants } from 'node:fs';
import { DiskchainError } from '../io/errors.js';

export type QemuDisk =
  | {
      kind: 'nbd';
      /** The NBD server's unix socket. */
      socket: string;
      /** Export name; the server's default export when omitted. */
      exportName?: string;
      readOnly?: boolean;
    }
  | {
      kind: 'file';
      path: string;
      /** The image format QEMU reads the file as (default raw). */
      format?: 'raw' | 'qcow2';
      readOnly?: boolean;
    };

export type QemuBoot =
  | { kind: 'kernel'; kernel: string; initrd?: string; append?: string }
  /** The BIOS boots the first disk. */
  | { kind: 'disk' };

export interface QemuConfig {
  /** The emulator (default qemu-system-x86_64, found on PATH). */
  binary?: string;
  /** Shown in `ps` and in QEMU's messages. */
  name?: string;
  /** Machine type (default "pc"). A saved state can only be restored on the same machine type version. */
  machine?: string;
  /** kvm when /dev/kvm is usable, tcg otherwise (default auto). */
  accel?: 'auto' | 'kvm' | 'tcg';
  memoryMiB: number;
  cpus?: number;
  boot: QemuBoot;
  disks: QemuDisk[];
  /** The QMP monitor's unix socket (QEMU listens there). */
  qmpSocket: string;
  /** Where the guest's first serial port (ttyS0) is written; discarded when omitted. */
  serialLog?: string;
  /** The host end of a virtio-serial port named org.qemu.guest_agent.0 (QEMU listens there). */
  guestAgentSocket?: string;
  /** Start with the vCPUs stopped (-S); `cont` starts them. */
  paused?: boolean;
  /** Wait for `migrate-incoming` (a restore) instead of booting. */
  incoming?: 'defer';
  /** What a failed guest write does: enospc (pause on ENOSPC, report others; default), stop (pause on any), report. */
  writeErrorPolicy?: 'enospc' | 'stop' | 'report';
  /** Exit instead of rebooting when the guest resets (-no-reboot). */
  noReboot?: boolean;
}

/** Linux's sun_path holds 108 bytes including the terminating NUL. */
const UNIX_PATH_MAX = 107;

export function kvmUsable(): boolean {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** The accelerator a configuration runs with on this machine. */
export function resolveAccel(config: Pick<QemuConfig, 'accel'>, kvm: () => boolean = kvmUsable): 'kvm' | 'tcg' {
  const accel = config.accel ?? 'auto';
  if (accel !== 'auto') return accel;
  return kvm() ? 'kvm' : 'tcg';
}

/** The arguments after the binary's name. Throws INVALID_ARGUMENT for a configuration QEMU would refuse. */
export function qemuArgv(config: QemuConfig, kvm: () => boolean = kvmUsable): string[] {
  check(config);
  const accel = resolveAccel(config, kvm);
  const argv = ['-nodefaults', '-no-user-config', '-display', 'none', '-nic', 'none'];
  if (config.name !== undefined) argv.push('-name', opt(config.name));
  argv.push('-machine', opt(config.machine ?? 'pc'), '-accel', accel, '-m', String(config.memoryMiB), '-smp', String(config.cpus ?? 1));
  if (accel === 'kvm') argv.push('-cpu', 'host');

  argv.push('-chardev', `socket,id=qmp,path=${opt(config.qmpSocket)},server=on,wait=off`, '-mon', 'chardev=qmp,mode=control');
  if (config.serialLog !== undefined) argv.push('-chardev', `file,id=serial0,path=${opt(config.serialLog)}`, '-serial', 'chardev:serial0');

  if (config.boot.kind === 'kernel') {
    argv.push('-kernel', config.boot.kernel);
    if (config.boot.initrd !== undefined) argv.push('-initrd', config.boot.initrd);
    if (config.boot.append !== undefined) argv.push('-append', config.boot.append);
  } else {
    argv.push('-boot', 'order=c');
  }

  const werror = config.writeErrorPolicy ?? 'enospc';
  config.disks.forEach((disk, i) => {
    argv.push('-blockdev', JSON.stringify(blockdev(disk, `disk${i}`)));
    const device: Record<string, unknown> = { driver: 'virtio-blk-pci', id: `disk${i}-device`, drive: `disk${i}`, werror, rerror: 'report' };
    if (config.boot.kind === 'disk' && i === 0) device.bootindex = 0;
    argv.push('-device', JSON.stringify(device));
  });

  if (config.guestAgentSocket !== undefined) {
    argv.push(
      '-device', 'virtio-serial-pci,id=serial-bus',
      '-chardev', `socket,id=qga,path=${opt(config.guestAgentSocket)},server=on,wait=off`,
      '-device', 'virtserialport,bus=serial-bus.0,chardev=qga,name=org.qemu.guest_agent.0',
    );
  }
  if (config.paused) argv.push('-S');
  if (config.incoming !== undefined) argv.push('-incoming', config.incoming);
  if (config.noReboot) argv.push('-no-reboot');
  return argv;
}

function blockdev(disk: QemuDisk, nodeName: string): Record<string, unknown> {
  if (disk.kind === 'nbd') {
    return {
      driver: 'nbd',
      'node-name': nodeName,
      server: { type: 'unix', path: disk.socket },
      ...(disk.exportName !== undefined ? { export: disk.exportName } : {}),
      'read-only': disk.readOnly ?? false,
    };
  }
  return {
    driver: disk.format ?? 'raw',
    'node-name': nodeName,
    file: { driver: 'file', filename: disk.path },
    'read-only': disk.readOnly ?? false,
  };
}

/** A value inside a QemuOpts list: commas are doubled. */
function opt(value: string): string {
  return value.replaceAll(',', ',,');
}

function check(config: QemuConfig): void {
  const bad = (message: string, details: Record<string, unknown> = {}): never => {
    throw new DiskchainError('INVALID_ARGUMENT', `QEMU configuration: ${message}`, details);
  };
  if (!Number.isInteger(config.memoryMiB) || config.memoryMiB < 16 || config.memoryMiB > 16 * 1024 * 1024) bad(`memory must be a whole number of MiB from 16, got ${config.memoryMiB}`);
  const cpus = config.cpus ?? 1;
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > 255) bad(`cpus must be 1 to 255, got ${cpus}`);
  if (config.disks.length > 24) bad(`at most 24 disks, got ${config.disks.length}`);
  if (config.boot.kind === 'disk' && config.disks.length === 0) bad('disk boot needs a disk');
  const sockets = [config.qmpSocket, config.guestAgentSocket, ...config.disks.map((d) => (d.kind === 'nbd' ? d.socket : undefined))];
  for (const path of sockets) {
    if (path !== undefined && Buffer.byteLength(path) > UNIX_PATH_MAX) bad(`unix socket path longer than ${UNIX_PATH_MAX} bytes`, { file: path });
  }
  const strings = [config.name, config.machine, config.serialLog, config.qmpSocket, config.guestAgentSocket, ...Object.values(config.boot), ...config.disks.flatMap((d) => Object.values(d))];
  for (const s of strings) {
    if (typeof s === 'string' && /[\0\n]/.test(s)) bad('a path or name contains a NUL or newline', { value: s });
  }
}
