/**
 * Running VM folders in tests: a VM folder that boots the test guest, its serial log, its disk as
 * the guest wrote it (read through the VM's chain), and a clean-up that ends any worker left.
 */
import { join } from 'node:path';
import { createVm, withVm } from '../../src/api/vm.js';
import { stopVm, vmStatus } from '../../src/api/vm-runtime.js';
import type { VmConfig } from '../../src/checkpoint/manifest.js';
import { processAlive } from '../../src/runtime/run-record.js';
import { readGuestView, SerialLog, type GuestDiskView, type GuestImage } from './guest.js';

/** A VM folder whose disk0 (1 MiB) gets the guest's counter and disk1 (16 MiB) its ext2 for fsfreeze. */
export async function makeGuestVm(dir: string, image: GuestImage, name = 'vm', settings: { checkpointType?: VmConfig['checkpointType']; guestAgent?: boolean; freeSpaceReserveBytes?: number; automaticCheckpoints?: boolean } = {}): Promise<string> {
  const folder = join(dir, name);
  await createVm(folder, {
    newDisks: [{ size: 1 << 20 }, { size: 16 << 20 }],
    memoryBytes: 256 << 20,
    checkpointType: settings.checkpointType ?? 'standard',
    settings: {
      boot: { kind: 'kernel', kernel: image.kernel, initrd: image.initrd, append: 'console=ttyS0 panic=-1' },
      ...(settings.guestAgent === false ? { guestAgent: false } : {}),
      ...(settings.automaticCheckpoints ? { automaticCheckpoints: true } : {}),
      ...(settings.freeSpaceReserveBytes !== undefined ? { freeSpaceReserveBytes: settings.freeSpaceReserveBytes } : {}),
    },
  });
  return folder;
}

export function serialOf(folder: string): SerialLog {
  return new SerialLog(join(folder, 'run', 'serial.log'));
}

/** The guest's records on disk0, read through Now's chain (or a checkpoint's). */
export async function guestDiskOf(folder: string, checkpoint?: string): Promise<GuestDiskView> {
  return withVm(folder, { lock: 'none', command: 'test' }, async (vm) => {
    return readGuestView(await vm.openDisk('disk0', checkpoint ? { checkpoint } : {}));
  });
}

/** Ends whatever still runs a VM (a failed test): a hard stop, else SIGKILL of its pids. */
export async function killVm(folder: string): Promise<void> {
  const s = await vmStatus(folder).catch(() => undefined);
  if (!s) return;
  if (s.workerPid !== null && !s.stale) await stopVm(folder, { force: true }).catch(() => undefined);
  for (const pid of [s.workerPid, s.qemuPid]) {
    if (pid !== null && processAlive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }
}

/** The checkpoints' names in vm.json. */
export async function checkpointNames(folder: string): Promise<string[]> {
  return withVm(folder, { lock: 'none', command: 'test' }, async (vm) => vm.manifest.checkpoints.map((c) => c.name));
}
