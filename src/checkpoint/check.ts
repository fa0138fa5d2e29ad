/**
 * vm check: whatever is on disk and not in the tree, and whatever the tree names that is not right
 * on disk, each with a safe plan. `repair` does only what cannot lose data:
 *
 *   interrupted operations       finished or rolled back from their records (recover.ts)
 *   our own temporary files      (*.tmp, *.diskchain-partial, *.diskchain-rebase.tmp) deleted
 *   a stray checkpoint config    (Snapshots/<id>/config.json of no checkpoint) deleted
 *   unnamed layers               with no child deleted; with one child merged with it (collapse.ts)
 *
 * Stray disk files (a crash's leftover or a lost Hyper-V run's layer) may hold the only copy of
 * something: they are reported with the commands to inspect, keep or discard them, never deleted.
 */
import { readdir, rm, rmdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { isDiskchainError } from '../io/errors.js';
import { openDisk } from '../chain/open-disk.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { shellQuote } from '../ops/scan.js';
import { collapseAll } from './collapse.js';
import { openNodeChain } from './disks.js';
import { DISKS_DIR, JOURNAL_DIR, MANIFEST_FILE, RUN_DIR, SNAPSHOTS_DIR, type VmFolder } from './folder.js';
import { SAVED_DIR } from './saved-state.js';
import { childNodes, namesOfNodes } from './graph.js';
import { recoverVm, type RecoveryReport } from './recover.js';
import { listRecords, namedFiles, readRecord, type TransactionRecord } from './transaction.js';
import { VM_LOCK_FILE } from './vm-lock.js';

export interface VmFinding {
  severity: 'error' | 'warning' | 'info';
  code: string;
  message: string;
  file?: string;
  /** What to do about it; `repair: true` when `vm check --repair` does it. */
  plan: { repair: boolean; steps: string[] };
}

export interface VmCheckReport {
  folder: string;
  findings: VmFinding[];
  /** What --repair did. */
  repaired: { recovered: RecoveryReport[]; deleted: string[]; merged: string[] } | null;
  clean: boolean;
}

const OUR_TEMPORARY = /(\.tmp|\.diskchain-partial|\.diskchain-rebase\.tmp)$/;

async function inspect(vm: VmFolder, signal?: AbortSignal): Promise<VmFinding[]> {
  const m = vm.manifest;
  const findings: VmFinding[] = [];
  const records: TransactionRecord[] = [];
  for (const path of await listRecords(vm.realFolder)) {
    try {
      const r = await readRecord(path);
      records.push(r);
      findings.push({
        severity: 'warning',
        code: 'INTERRUPTED',
        message: `an operation did not finish: ${r.operation} (${r.command}, process ${r.pid}, started ${r.started})`,
        file: path,
        plan: { repair: true, steps: [m.transaction === r.id ? 'finish it (its commit is done): delete the files the new tree dropped' : r.collapse ? `finish the merge of ${r.collapse.victim} into ${r.collapse.survivor}` : r.group ? 'finish it if its group decided to commit, else roll it back' : 'roll it back: delete the files it had made; the tree stays as it was'] },
      });
    } catch (e) {
      findings.push({ severity: 'error', code: 'BAD_RECORD', message: `a journal record cannot be read: ${isDiskchainError(e) ? e.message : String(e)}`, file: path, plan: { repair: false, steps: ['inspect it; it names an operation diskchain cannot finish or roll back'] } });
    }
  }
  const inFlight = new Set(records.flatMap((r) => [...r.actions.map((a) => a.file), ...r.removes, ...(r.collapse ? [r.collapse.victim, r.collapse.survivor] : [])]));
  const named = namedFiles(m);
  // Files the tree names.
  for (const n of m.nodes) {
    try {
      await vm.realPath(n.file);
    } catch (e) {
      findings.push({ severity: 'error', code: 'MISSING_LAYER', message: `${n.file} (disk ${n.disk}) ${isDiskchainError(e) ? e.message : 'is missing'}`, file: vm.path(n.file), plan: { repair: false, steps: ['restore it from a backup; the checkpoints and Now that read through it cannot be read without it'] } });
    }
  }
  for (const c of m.checkpoints) {
    if (!(await stat(vm.path(c.config)).catch(() => undefined))) findings.push({ severity: 'warning', code: 'MISSING_CONFIG', message: `checkpoint "${c.name}" has no ${c.config}`, file: vm.path(c.config), plan: { repair: false, steps: ['applying or exporting it will fail; remove the checkpoint or restore the file'] } });
  }
  // Each chain as the files link it, against the graph.
  for (const d of m.disks) {
    for (const leaf of m.nodes.filter((n) => n.disk === d.id && childNodes(m, n.id).length === 0)) {
      try {
        // Only whether the chain opens: a running VM writing its leaf must not make the check fail.
        await (await openNodeChain(vm, leaf.id, { allowSkips: records.length > 0, forceShare: true })).close();
      } catch (e) {
        if (findings.some((f) => f.code === 'MISSING_LAYER')) continue;
        findings.push({ severity: 'error', code: 'CHAIN_MISMATCH', message: isDiskchainError(e) ? e.message : String(e), file: vm.path(leaf.file), plan: { repair: false, steps: [`inspect with: diskchain chain ${shellQuote(vm.path(leaf.file))}`] } });
      }
    }
  }
  // Unnamed layers.
  const names = namesOfNodes(m);
  for (const n of m.nodes.filter((x) => !names.has(x.id))) {
    const kids = childNodes(m, n.id).length;
    if (kids === 0) findings.push({ severity: 'warning', code: 'UNNAMED_LEAF', message: `${n.file} is named by no checkpoint and nothing derives from it`, file: vm.path(n.file), plan: { repair: true, steps: ['delete it'] } });
    // Reads correctly as it is (an adopted disk's parents, or a merge that could not run): repair reclaims its space.
    else if (kids === 1) findings.push({ severity: 'info', code: 'MERGE_PENDING', message: `${n.file} is named by no checkpoint and has one child left: --repair merges it with it`, file: vm.path(n.file), plan: { repair: true, steps: ['merge it with its child, in the direction that copies less'] } });
    else findings.push({ severity: 'info', code: 'UNNAMED_LAYER', message: `${n.file} is named by no checkpoint; ${kids} children depend on it (merged when one is left)`, file: vm.path(n.file), plan: { repair: false, steps: [] } });
  }
  // Files on disk the tree does not name.
  for (const name of await readdir(vm.path(DISKS_DIR)).catch(() => [] as string[])) {
    const rel = `${DISKS_DIR}/${name}`;
    if (named.has(rel) || inFlight.has(rel)) continue;
    const abs = vm.path(rel);
    if (OUR_TEMPORARY.test(name)) {
      findings.push({ severity: 'warning', code: 'LEFTOVER', message: `${rel} is a temporary file of an operation that did not finish`, file: abs, plan: { repair: true, steps: ['delete it'] } });
      continue;
    }
    if (name.endsWith('.diskchain-merge.json')) {
      const covered = records.some((r) => r.collapse && name.startsWith(r.collapse.survivor.slice(DISKS_DIR.length + 1)));
      if (!covered) findings.push({ severity: 'warning', code: 'MERGE_JOURNAL', message: `${rel} is a merge journal no VM operation owns`, file: abs, plan: { repair: false, steps: ['a merge was started by hand: finish it with diskchain merge, or inspect it'] } });
      continue;
    }
    const disk = await openDisk(abs, { forceShare: true }).catch(() => undefined);
    if (disk) {
      const kind = disk.parent ? 'a differencing layer' : `a ${disk.diskType} disk`;
      await disk.close();
      findings.push({
        severity: 'warning',
        code: 'STRAY_LAYER',
        message: `${rel} is ${kind} that no checkpoint and no operation names (a crash's leftover, or a lost Hyper-V run's layer)`,
        file: abs,
        plan: { repair: false, steps: [`inspect: diskchain chain ${shellQuote(abs)}`, `keep its content: diskchain convert ${shellQuote(abs)} ${shellQuote(`${abs}.flat.vhdx`)}`, `discard it: rm ${shellQuote(abs)}`] },
      });
    } else findings.push({ severity: 'info', code: 'STRAY_FILE', message: `${rel} is not a disk and not part of the VM`, file: abs, plan: { repair: false, steps: [] } });
  }
  const ids = new Set(m.checkpoints.map((c) => c.id));
  for (const name of await readdir(vm.path(SNAPSHOTS_DIR)).catch(() => [] as string[])) {
    if (ids.has(name) || [...inFlight].some((f) => f.startsWith(`${SNAPSHOTS_DIR}/${name}/`))) continue;
    const files = await readdir(vm.path(`${SNAPSHOTS_DIR}/${name}`)).catch(() => [] as string[]);
    const onlyConfig = files.every((f) => f === 'config.json' || OUR_TEMPORARY.test(f));
    findings.push({ severity: 'warning', code: 'STRAY_SNAPSHOT', message: `${SNAPSHOTS_DIR}/${name}/ belongs to no checkpoint`, file: vm.path(`${SNAPSHOTS_DIR}/${name}`), plan: { repair: onlyConfig, steps: [onlyConfig ? 'delete it (only a config)' : 'inspect it: it holds more than a config'] } });
  }
  for (const name of await readdir(vm.realFolder)) {
    if ([MANIFEST_FILE, DISKS_DIR, SNAPSHOTS_DIR, JOURNAL_DIR, RUN_DIR, SAVED_DIR].includes(name) || name.startsWith(VM_LOCK_FILE)) continue;
    if (name === `${MANIFEST_FILE}.tmp`) findings.push({ severity: 'warning', code: 'LEFTOVER', message: `${name} is an unfinished write of vm.json (vm.json itself is whole)`, file: join(vm.realFolder, name), plan: { repair: true, steps: ['delete it'] } });
    else findings.push({ severity: 'info', code: 'STRAY_FILE', message: `${name} is not part of the VM folder's layout`, file: join(vm.realFolder, name), plan: { repair: false, steps: [] } });
  }
  void signal;
  return findings;
}

export interface CheckOptions extends LongOperationOptions {
  repair?: boolean;
  command?: string;
}

export async function checkVm(vm: VmFolder, options: CheckOptions = {}): Promise<VmCheckReport> {
  let repaired: VmCheckReport['repaired'] = null;
  if (options.repair) {
    const command = options.command ?? 'vm check --repair';
    const recovered = await recoverVm(vm, options);
    const deleted: string[] = [];
    for (const f of await inspect(vm, options.signal)) {
      if (!f.plan.repair || !f.file) continue;
      if (f.code === 'LEFTOVER') {
        await rm(f.file, { force: true });
        deleted.push(f.file);
      } else if (f.code === 'STRAY_SNAPSHOT') {
        for (const name of await readdir(f.file).catch(() => [] as string[])) await rm(join(f.file, name), { force: true });
        await rmdir(f.file).catch(() => undefined);
        deleted.push(f.file);
      }
    }
    const { collapsed, deleted: pruned } = await collapseAll(vm, { command, ...(options.signal ? { signal: options.signal } : {}), ...(options.onProgress ? { onProgress: options.onProgress } : {}) });
    repaired = { recovered, deleted: [...deleted, ...pruned.map((f) => vm.path(f))], merged: collapsed.map((c) => `${c.victim} -> ${c.survivor}`) };
  }
  const findings = await inspect(vm, options.signal);
  return { folder: vm.folder, findings, repaired, clean: findings.every((f) => f.severity === 'info') };
}
