/** Resize-VHD as a library call: a file a VM's manifest names is resized as the VM's disk (its lock and guard). */
import { owningVm, resizeVmDisk } from '../checkpoint/resize-disk.js';
import { openVmFolder } from '../checkpoint/vms.js';
import { resizeDisk, type ResizeResult } from '../ops/resize.js';

export type { ResizeResult };

export interface ResizeCallOptions {
  command?: string;
}

/** Grows a VHDX/VHD, or shrinks a VHDX when nothing allocated lies beyond the new end. */
export async function resize(path: string, size: number, options: ResizeCallOptions = {}): Promise<ResizeResult & { vm?: string; disk?: string }> {
  const command = options.command ?? 'diskchain resize';
  const owner = await owningVm(path);
  if (!owner) return resizeDisk(path, size, { command });
  const { vm } = await openVmFolder(owner.folder, { command });
  try {
    return await resizeVmDisk(vm, owner.diskId, size, command);
  } finally {
    await vm.close();
  }
}
