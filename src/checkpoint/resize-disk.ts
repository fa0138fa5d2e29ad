/**
 * `vm resize-disk`: Resize-VHD on a VM's disk, with Hyper-V's guard: a disk that checkpoints refer to
 * keeps its size (Hyper-V offers no Edit Disk while checkpoints exist), so the VM must have none, and
 * the disk must be one file (Now's node, no parent). The VM's write lock is held (the VM is off; a
 * running VM's worker holds the lock), and the file changes through ops/resize.ts, crash-safe at the
 * file level. vm.json does not change: sizes are read from the disks themselves.
 */
import { lstat, realpath } from 'node:fs/promises';
import { basename, dirname, join, relative, sep } from 'node:path';
import { DiskchainError } from '../io/errors.js';
import { resizeDisk, type ResizeResult } from '../ops/resize.js';
import { DISKS_DIR, MANIFEST_FILE, readManifest, type VmFolder } from './folder.js';
import { nodeById } from './graph.js';

export async function resizeVmDisk(vm: VmFolder, diskId: string, size: number, command = 'vm resize-disk'): Promise<ResizeResult & { vm: string; disk: string }> {
  vm.requireWrite();
  const m = vm.manifest;
  const slot = m.disks.find((d) => d.id === diskId);
  if (!slot) throw new DiskchainError('NOT_FOUND', `the VM has no disk "${diskId}" (it has ${m.disks.map((d) => d.id).join(', ')})`, { file: vm.folder });
  if (slot.format === 'raw') throw new DiskchainError('UNSUPPORTED', `disk "${diskId}" is a raw image; convert it to VHDX to resize it`, { file: vm.folder });
  const now = nodeById(m, m.now.disks[diskId]!);
  const layers = m.nodes.filter((n) => n.disk === diskId).length;
  if (m.checkpoints.length > 0 || now.parent !== null || layers > 1) {
    const roots = m.checkpoints.filter((c) => c.parent === null).map((c) => `"${c.name}"`);
    throw new DiskchainError(
      'HAS_DEPENDENTS',
      `${m.name} has ${m.checkpoints.length} checkpoint(s)${layers > 1 ? ` and disk "${diskId}" is ${layers} layers` : ''}: a disk checkpoints refer to keeps its size. Remove them (diskchain checkpoint remove <vm> ${roots[0] ?? '<checkpoint>'} --subtree; Now keeps its content), or export a checkpoint to a new VM (diskchain checkpoint export) and resize that VM's disk`,
      { file: vm.folder, checkpoints: m.checkpoints.length },
    );
  }
  const result = await resizeDisk(await vm.realPath(now.file), size, { command });
  return { ...result, vm: m.name, disk: diskId };
}

/** The VM folder and disk slot whose manifest names `path` (a file in `<vm>/Virtual Hard Disks/`), or undefined. */
export async function owningVm(path: string): Promise<{ folder: string; diskId: string } | undefined> {
  const real = await realpath(path);
  if (basename(dirname(real)) !== DISKS_DIR) return undefined;
  const folder = dirname(dirname(real));
  if (!(await lstat(join(folder, MANIFEST_FILE)).catch(() => undefined))) return undefined;
  const m = await readManifest(folder);
  const rel = relative(folder, real).split(sep).join('/');
  const node = m.nodes.find((n) => n.file === rel);
  return node ? { folder, diskId: node.disk } : undefined;
}
