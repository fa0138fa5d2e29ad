/**
 * A VM's QEMU command line from its manifest (docs/vm-runtime.md): memory and cpus from the config,
 * boot from `config.boot` (the first disk when absent), each disk an NBD export of the worker's
 * socket, QMP, the serial log and the guest agent's port in `<vm>/run/`, no network. The device set
 * depends only on the config, so a state saved by one run loads into the next (-incoming).
 */
import type { Manifest } from '../checkpoint/manifest.js';
import type { QemuConfig } from '../vm/qemu-command.js';
import { runPath } from './run-record.js';

const MIB = 1024 * 1024;

export interface QemuConfigOptions {
  /** A versioned machine type (a saved state loads only on the one it was saved on). */
  machine?: string;
  incoming?: boolean;
  binary?: string;
}

export function qemuConfigFor(m: Manifest, realFolder: string, options: QemuConfigOptions = {}): QemuConfig {
  const c = m.config;
  const boot = c.boot ?? { kind: 'disk' as const };
  return {
    ...(options.binary ? { binary: options.binary } : {}),
    name: `diskchain-${m.name}`,
    machine: options.machine ?? c.machine ?? 'pc',
    memoryMiB: Math.ceil(c.memoryBytes / MIB),
    cpus: c.cpus,
    boot: boot.kind === 'kernel' ? { kind: 'kernel', kernel: boot.kernel, ...(boot.initrd ? { initrd: boot.initrd } : {}), ...(boot.append !== undefined ? { append: boot.append } : {}) } : { kind: 'disk' },
    disks: m.disks.map((d) => ({ kind: 'nbd' as const, socket: runPath(realFolder, 'nbd'), exportName: d.id })),
    qmpSocket: runPath(realFolder, 'qmp'),
    serialLog: runPath(realFolder, 'serial'),
    ...(c.guestAgent === false ? {} : { guestAgentSocket: runPath(realFolder, 'agent') }),
    ...(options.incoming ? { incoming: 'defer' as const } : {}),
    writeErrorPolicy: 'enospc',
  };
}
