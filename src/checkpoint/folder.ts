/**
 * A VM folder on disk (docs/vm-folder.md):
 *
 *   <vm>/vm.json                the manifest (manifest.ts), replaced atomically by every commit
 *   <vm>/vm.lock                the VM's lock (vm-lock.ts)
 *   <vm>/Virtual Hard Disks/    disk0.vhdx, disk0_<GUID>.avhdx, ... (the disk graph's files)
 *   <vm>/Snapshots/<id>/        config.json (the VM config at that checkpoint), state files
 *   <vm>/journal/               intent records of operations in progress (transaction.ts)
 *   <vm>/run/                   sockets, pid and logs of a running VM (never needed after a crash)
 *
 * `VmFolder` is an opened folder: its manifest (validated on every read), its lock, and the one
 * place paths from the manifest become paths on this machine (confined to the folder, symlinks too).
 */
import { mkdir, readFile, realpath, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { writeFileAtomic } from '../io/durable.js';
import { DiskchainError } from '../io/errors.js';
import { isConfinedRelative, parseManifest, serializeManifest, type Manifest } from './manifest.js';
import { lockVm, VM_LOCK_FILE, type FileLock, type LockMode } from './vm-lock.js';

export const MANIFEST_FILE = 'vm.json';
export const DISKS_DIR = 'Virtual Hard Disks';
export const SNAPSHOTS_DIR = 'Snapshots';
export const JOURNAL_DIR = 'journal';
export const RUN_DIR = 'run';
/** vm.json larger than this is not ours (bounded read of an untrusted file). */
const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

export function manifestPath(folder: string): string {
  return join(resolve(folder), MANIFEST_FILE);
}

/** Reads and validates vm.json; NOT_FOUND when the folder holds none. */
export async function readManifest(folder: string): Promise<Manifest> {
  const path = manifestPath(folder);
  let size: number;
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new DiskchainError('MANIFEST_INVALID', 'vm.json is not a file', { file: path, path: '$' });
    size = s.size;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') {
      throw new DiskchainError('NOT_FOUND', `${resolve(folder)} is not a VM folder (it has no ${MANIFEST_FILE})`, { file: resolve(folder) });
    }
    throw e;
  }
  if (size > MAX_MANIFEST_BYTES) throw new DiskchainError('MANIFEST_INVALID', `vm.json is ${size} bytes, larger than any diskchain writes`, { file: path, path: '$' });
  return parseManifest(await readFile(path, 'utf8'), path);
}

export type OpenLock = LockMode | 'none';

export class VmFolder {
  private constructor(
    /** The folder as given, made absolute. */
    readonly folder: string,
    /** The folder after symlinks: every file of the VM must be inside it. */
    readonly realFolder: string,
    public manifest: Manifest,
    private lock: FileLock | undefined,
    readonly lockMode: OpenLock,
  ) {}

  /** Opens a VM folder: takes the lock first (when asked), then reads the manifest. */
  static async open(folder: string, mode: OpenLock, command: string): Promise<VmFolder> {
    const abs = resolve(folder);
    const real = await realpath(abs).catch(() => {
      throw new DiskchainError('NOT_FOUND', `no VM folder at ${abs}`, { file: abs });
    });
    const lock = mode === 'none' ? undefined : await lockVm(join(real, VM_LOCK_FILE), mode, command);
    try {
      return new VmFolder(abs, real, await readManifest(real), lock, mode);
    } catch (e) {
      await lock?.release();
      throw e;
    }
  }

  /** Opens a folder whose manifest does not exist yet (vm create), holding its write lock. */
  static async forNew(folder: string, manifest: Manifest, command: string): Promise<VmFolder> {
    const real = await realpath(folder);
    const lock = await lockVm(join(real, VM_LOCK_FILE), 'write', command);
    return new VmFolder(resolve(folder), real, manifest, lock, 'write');
  }

  get writable(): boolean {
    return this.lockMode === 'write';
  }

  /** The absolute path of a manifest path (relative, confined by the schema). */
  path(rel: string): string {
    if (!isConfinedRelative(rel)) throw new DiskchainError('PATH_NOT_ALLOWED', `"${rel}" is not a path inside the VM folder`, { file: this.folder });
    return join(this.realFolder, ...rel.split('/'));
  }

  /** Like path(), and the file (after symlinks) must be inside the VM folder. */
  async realPath(rel: string): Promise<string> {
    const abs = this.path(rel);
    const real = await realpath(abs);
    if (real !== this.realFolder && !real.startsWith(this.realFolder + sep)) {
      throw new DiskchainError('PATH_NOT_ALLOWED', `${rel} leads outside the VM folder (to ${real})`, { file: abs });
    }
    return real;
  }

  async reload(): Promise<Manifest> {
    this.manifest = await readManifest(this.realFolder);
    return this.manifest;
  }

  /** The commit: vm.json replaced atomically (temporary file, flush, rename, flush the folder). */
  async writeManifest(m: Manifest): Promise<void> {
    this.requireWrite();
    await writeFileAtomic(join(this.realFolder, MANIFEST_FILE), serializeManifest(m));
    this.manifest = m;
  }

  requireWrite(): void {
    if (!this.writable) throw new DiskchainError('INVALID_ARGUMENT', 'internal: the VM was opened without its write lock');
  }

  async ensureLayout(): Promise<void> {
    for (const d of [DISKS_DIR, SNAPSHOTS_DIR, JOURNAL_DIR, RUN_DIR]) await mkdir(join(this.realFolder, d), { recursive: true });
  }

  async close(): Promise<void> {
    const lock = this.lock;
    this.lock = undefined;
    await lock?.release();
  }
}

/** Hyper-V's name for a checkpoint's new layer: `<disk>_<GUID>.avhdx` (.avhd for VHD), beside the disk. */
export function layerFileName(stem: string, nodeId: string, format: 'vhdx' | 'vhd' | 'raw'): string {
  return `${DISKS_DIR}/${stem}_${nodeId.toUpperCase()}.${format === 'vhd' ? 'avhd' : 'avhdx'}`;
}

/** A checkpoint's own folder and config file. */
export function checkpointConfigFile(id: string): string {
  return `${SNAPSHOTS_DIR}/${id}/config.json`;
}
