/**
 * VM folders as a whole: opening one (lock, manifest, recovery of an interrupted operation),
 * finding them under some roots, and deleting one (only the files its manifest owns).
 */
import { lstat, readdir, rm, rmdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { syncFolder } from '../io/durable.js';
import { DiskchainError, isDiskchainError } from '../io/errors.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { DISKS_DIR, JOURNAL_DIR, MANIFEST_FILE, readManifest, RUN_DIR, SNAPSHOTS_DIR, VmFolder, type OpenLock } from './folder.js';
import { hasPendingRecords, recoverVm, type RecoveryReport } from './recover.js';
import { listRecords, namedFiles } from './transaction.js';

export interface OpenVmFolderOptions extends LongOperationOptions {
  /** 'write' (default) for operations that change the VM, 'read' to read its disks, 'none' for its manifest only. */
  lock?: OpenLock;
  command?: string;
  /** With the write lock: finish or roll back an interrupted operation first (default true). */
  recover?: boolean;
}

/** Opens a VM folder; with the write lock, an interrupted operation is settled first. */
export async function openVmFolder(folder: string, options: OpenVmFolderOptions = {}): Promise<{ vm: VmFolder; recovered: RecoveryReport[] }> {
  const vm = await VmFolder.open(folder, options.lock ?? 'write', options.command ?? 'diskchain');
  try {
    let recovered: RecoveryReport[] = [];
    if (vm.writable && (options.recover ?? true) && (await hasPendingRecords(vm.realFolder))) {
      recovered = await recoverVm(vm, options);
      await vm.reload();
    }
    return { vm, recovered };
  } catch (e) {
    await vm.close();
    throw e;
  }
}

export interface VmListEntry {
  folder: string;
  id: string | null;
  name: string | null;
  disks: number;
  checkpoints: number;
  now: { parent: string | null } | null;
  /** Operations left in the journal. */
  pending: number;
  /** Why the folder could not be read as a VM (a damaged vm.json), or null. */
  error: { code: string; message: string } | null;
}

const MAX_LIST = 10000;

/** VM folders at the roots and up to two levels below them (a damaged one is listed with its error). */
export async function listVms(roots: string[]): Promise<VmListEntry[]> {
  const out: VmListEntry[] = [];
  const visit = async (folder: string, depth: number): Promise<void> => {
    if (out.length >= MAX_LIST) return;
    if (await lstat(join(folder, MANIFEST_FILE)).catch(() => undefined)) {
      const pending = (await listRecords(folder)).length;
      try {
        const m = await readManifest(folder);
        out.push({ folder, id: m.id, name: m.name, disks: m.disks.length, checkpoints: m.checkpoints.length, now: { parent: m.now.parent }, pending, error: null });
      } catch (e) {
        out.push({ folder, id: null, name: null, disks: 0, checkpoints: 0, now: null, pending, error: isDiskchainError(e) ? { code: e.code, message: e.message } : { code: 'IO', message: String(e) } });
      }
      return;
    }
    if (depth >= 2) return;
    const entries = await readdir(folder, { withFileTypes: true }).catch(() => []);
    for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) if (e.isDirectory() && !e.name.startsWith('.')) await visit(join(folder, e.name), depth + 1);
  };
  for (const root of roots) {
    const abs = resolve(root);
    if (!(await lstat(abs).catch(() => undefined))?.isDirectory()) throw new DiskchainError('NOT_FOUND', `${abs} is not a folder`, { file: abs });
    await visit(abs, 0);
  }
  return out;
}

/**
 * Deletes a VM (write lock held, interrupted operations settled): the files its manifest owns
 * (layers, checkpoint configs and states), its journal, vm.json, then the folders it made if they
 * are empty. Anything else in the folder is left and listed.
 */
export async function deleteVm(vm: VmFolder): Promise<{ deleted: string[]; left: string[] }> {
  vm.requireWrite();
  const deleted: string[] = [];
  for (const rel of namedFiles(vm.manifest)) {
    const abs = vm.path(rel);
    if (await lstat(abs).catch(() => undefined)) {
      await rm(abs, { force: true });
      deleted.push(abs);
    }
  }
  for (const c of vm.manifest.checkpoints) await rmdir(vm.path(`${SNAPSHOTS_DIR}/${c.id}`)).catch(() => undefined);
  await rm(join(vm.realFolder, MANIFEST_FILE), { force: true });
  deleted.push(join(vm.realFolder, MANIFEST_FILE));
  for (const dir of [DISKS_DIR, SNAPSHOTS_DIR, JOURNAL_DIR, RUN_DIR]) await rmdir(join(vm.realFolder, dir)).catch(() => undefined);
  await vm.close();
  for (const name of await readdir(vm.realFolder)) if (name.startsWith('vm.lock')) await rm(join(vm.realFolder, name), { force: true });
  const left = await readdir(vm.realFolder);
  if (left.length === 0) await rmdir(vm.realFolder).catch(() => undefined);
  else await syncFolder(vm.realFolder);
  return { deleted, left: left.map((n) => join(vm.realFolder, n)) };
}
