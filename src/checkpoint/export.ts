/**
 * Export-VMSnapshot: a new, standalone VM folder whose disks are the checkpoint's, flattened
 * (ops/convert: each chain streamed into one dynamic disk, holes kept), with the config as it was
 * at that checkpoint and no checkpoints of its own. The source VM is only read (read lock).
 *
 *   staging     <folder>.diskchain-partial/ with its mark, made durable before anything else goes in
 *               (a leftover of a killed export is replaced: one with the mark, or an empty one)
 *   disks       one flattened file per disk, each written and flushed
 *   manifest    vm.json of the new VM
 *   commit      the staging folder renamed to <folder>, the parent folder flushed; then its mark removed
 *
 * A crash or power cut before the rename leaves no folder under the target's name; after the rename's
 * folder flush, the whole VM (test/power-cut-export.test.ts).
 */
import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { removeFile, renameFile, syncFolder, writeFileAtomic } from '../io/durable.js';
import { DiskchainError } from '../io/errors.js';
import { FileSource } from '../io/file-source.js';
import { randomGuid } from '../io/guid.js';
import { createDisk } from '../chain/open-disk.js';
import { copyChainInto } from '../ops/convert.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { ensureSpace } from '../ops/space.js';
import { measureChain } from '../ops/measure.js';
import { readCheckpointConfig } from './apply.js';
import { testPoint } from './test-points.js';
import { openNodeChain } from './disks.js';
import { DISKS_DIR, JOURNAL_DIR, MANIFEST_FILE, RUN_DIR, SNAPSHOTS_DIR, type VmFolder } from './folder.js';
import { MANIFEST_KIND, MANIFEST_VERSION, serializeManifest, type Checkpoint, type DiskNode, type Manifest } from './manifest.js';

export type ExportFormat = 'vhdx' | 'vhd' | 'raw';

export interface ExportOptions extends LongOperationOptions {
  /** The disks' format (default: each disk keeps its own). */
  format?: ExportFormat;
  /** The new VM's name (default: the source VM's). */
  name?: string;
}

export interface ExportResult {
  folder: string;
  id: string;
  checkpoint: { id: string; name: string };
  disks: Array<{ id: string; path: string; format: ExportFormat; bytesWritten: number }>;
}

/** Marks a staging folder as ours, so only ours is ever replaced. */
const STAGING_MARK = '.diskchain-export';

/** Upper bound of the flattened copies' bytes (measured from the allocation maps; nothing is written). */
export async function exportBytes(vm: VmFolder, c: Checkpoint, format?: ExportFormat, signal?: AbortSignal): Promise<number> {
  let needed = 0;
  for (const d of vm.manifest.disks) {
    const chain = await openNodeChain(vm, c.disks[d.id]!, { allowSkips: true });
    try {
      const measure = await measureChain(chain, signal ? { signal } : {});
      needed += measure.convert[format ?? d.format];
    } finally {
      await chain.close();
    }
  }
  return needed;
}

export async function exportCheckpoint(vm: VmFolder, c: Checkpoint, target: string, options: ExportOptions = {}): Promise<ExportResult> {
  const folder = resolve(target);
  const existing = await lstat(folder).catch(() => undefined);
  if (existing && (!existing.isDirectory() || (await readdir(folder)).length > 0)) {
    throw new DiskchainError('EXISTS', `${folder} already exists; export makes a new VM folder`, { file: folder });
  }
  const staging = `${folder}.diskchain-partial`;
  if (await lstat(staging).catch(() => undefined)) {
    // Empty: a cut between its creation and its mark's (nothing of anyone's to lose).
    const ours = (await lstat(join(staging, STAGING_MARK)).catch(() => undefined)) || (await readdir(staging).catch(() => [null])).length === 0;
    if (!ours) throw new DiskchainError('EXISTS', `${staging} exists and is not an export diskchain left behind; move it away`, { file: staging });
    await rm(staging, { recursive: true, force: true });
  }
  const m = vm.manifest;
  const config = await readCheckpointConfig(vm, c);
  // Forecast: the flattened copies' upper bounds against the target's free space.
  const needed = await exportBytes(vm, c, options.format, options.signal);
  await ensureSpace(join(dirname(folder), 'x'), needed, `exporting "${c.name}"`);
  await mkdir(staging, { recursive: true });
  // Durable before the subfolders and files: a cut never leaves a staging folder with content but no mark.
  await (await FileSource.create(join(staging, STAGING_MARK))).close();
  await syncFolder(staging);
  for (const dir of [DISKS_DIR, SNAPSHOTS_DIR, JOURNAL_DIR, RUN_DIR]) await mkdir(join(staging, dir), { recursive: true });
  testPoint('export:staged');
  const nodes: DiskNode[] = [];
  const disks: ExportResult['disks'] = [];
  try {
    for (const d of m.disks) {
      const format = options.format ?? d.format;
      const file = `${DISKS_DIR}/${d.stem}.${format === 'raw' ? 'raw' : format}`;
      const chain = await openNodeChain(vm, c.disks[d.id]!, { allowSkips: true });
      try {
        const out = await createDisk(join(staging, ...file.split('/')), format, {
          diskType: 'dynamic',
          virtualSize: chain.virtualSize,
          logicalSectorSize: chain.logicalSectorSize,
          physicalSectorSize: chain.leaf.physicalSectorSize,
        });
        try {
          const { bytesWritten } = await copyChainInto(chain, out, {
            ...(options.signal ? { signal: options.signal } : {}),
            onProgress: (done, total) => {
              testPoint('export:copy');
              options.onProgress?.(done, total);
            },
          });
          disks.push({ id: d.id, path: join(folder, ...file.split('/')), format, bytesWritten });
        } finally {
          await out.close();
        }
      } finally {
        await chain.close();
      }
      nodes.push({ id: randomGuid(), disk: d.id, file, parent: null });
      testPoint(`export:disk:${nodes.length - 1}`);
    }
    await syncFolder(join(staging, DISKS_DIR));
    const id = randomGuid();
    const manifest: Manifest = {
      kind: MANIFEST_KIND,
      version: MANIFEST_VERSION,
      id,
      name: options.name ?? m.name,
      created: new Date().toISOString(),
      generation: 1,
      transaction: null,
      config,
      disks: m.disks.map((d) => ({ ...d, format: options.format ?? d.format })),
      nodes,
      checkpoints: [],
      now: { parent: null, disks: Object.fromEntries(nodes.map((n) => [n.disk, n.id])) },
    };
    await writeFileAtomic(join(staging, MANIFEST_FILE), serializeManifest(manifest));
    testPoint('export:manifest');
    await renameFile(staging, folder);
    await syncFolder(dirname(folder));
    testPoint('export:committed');
    // The mark goes last: a staging folder without it would be refused as not ours.
    await removeFile(join(folder, STAGING_MARK));
    await syncFolder(folder);
    return { folder, id, checkpoint: { id: c.id, name: c.name }, disks };
  } catch (e) {
    await rm(staging, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
}
