/**
 * Group checkpoints: several VMs checkpointed at one instant under one group id, all or none; and
 * their removal, all or none. Two phases over the members' own transactions (transaction.ts), every
 * VM's lock held throughout:
 *
 *   plan × VM        create: one checkpoint each, same name, instant and group id;
 *                    remove: each VM's member of the group, its merges forecast
 *   forecast         the bytes of every member, summed per file system: NO_SPACE before anything
 *   record × VM      each record lists every member's folder
 *   prepare × VM     create: each VM's children and config made (remove: nothing to prepare)
 *   decide           `decision: commit` written into every member's record, before any commit
 *   commit × VM      each vm.json replaced
 *   finish × VM      then, for a removal, each VM's merges (collapse.ts), one transaction each
 *
 * Any failure before the decision rolls every member back. After a crash, each member's recovery
 * (recover.ts) commits when any member's record carries the decision or any member's vm.json shows
 * the group's change committed (create: it holds the group's checkpoint; remove: it no longer does),
 * and rolls back otherwise: the members agree, whichever recovers first.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DiskchainError } from '../io/errors.js';
import { randomGuid } from '../io/guid.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { ensureSpace } from '../ops/space.js';
import { collapsesBytesNeeded } from './collapse.js';
import { checkpointBytes, checkpointInfo, planCheckpointOf, type CheckpointInfo } from './create.js';
import { virtualSizes } from './disks.js';
import { DISKS_DIR, type VmFolder } from './folder.js';
import { planRemoval, settleRemoval, type PlannedRemoval, type RemoveOptions, type RemoveResult } from './remove.js';
import { testPoint } from './test-points.js';
import { Transaction, type Plan } from './transaction.js';

export interface GroupCheckpointOptions extends LongOperationOptions {
  name?: string;
  command?: string;
}

export interface GroupCheckpointResult {
  group: string;
  created: string;
  checkpoints: Array<{ vm: string; folder: string; checkpoint: CheckpointInfo }>;
}

/** NO_SPACE before anything is written: each member's bytes, summed per file system. */
export async function ensureGroupSpace(items: Array<{ vm: Pick<VmFolder, 'realFolder'>; bytes: number }>, what: string): Promise<void> {
  const byDevice = new Map<number, { vm: Pick<VmFolder, 'realFolder'>; bytes: number }>();
  for (const { vm, bytes } of items) {
    const dev = (await stat(vm.realFolder)).dev;
    const at = byDevice.get(dev);
    byDevice.set(dev, { vm: at?.vm ?? vm, bytes: (at?.bytes ?? 0) + bytes });
  }
  for (const { vm, bytes } of byDevice.values()) if (bytes > 0) await ensureSpace(join(vm.realFolder, DISKS_DIR, 'x'), bytes, what);
}

/** begin × VM → prepare × VM → decide → commit × VM → finish × VM (see the top of the file). */
async function runGroup(members: Array<{ vm: VmFolder; plan: Plan }>, group: string, command: string, options: LongOperationOptions): Promise<Transaction[]> {
  const folders = members.map((p) => p.vm.realFolder);
  const txs: Transaction[] = [];
  let decided = false;
  try {
    for (const p of members) txs.push(await Transaction.begin(p.vm, { ...p.plan, group: { id: group, members: folders, decision: null } }, command));
    for (const tx of txs) await tx.prepare(options.signal ? { signal: options.signal } : {});
    for (const tx of txs) {
      tx.record.group!.decision = 'commit';
      await tx.save();
      decided = true;
      testPoint('group:decided');
    }
  } catch (e) {
    if (!decided) {
      for (const tx of txs) await tx.rollback().catch(() => undefined);
      throw e;
    }
    // One record holds the decision: the group commits (recovery would commit it anyway).
  }
  // Decided: from here every member commits (a failure is finished by recovery, never undone).
  for (const tx of txs) await tx.commit();
  for (const tx of txs) await tx.finish();
  return txs;
}

/** A group checkpoint's name when none is given. */
export function defaultGroupName(created: Date): string {
  return `Group (${created.toISOString().slice(0, 19).replace('T', ' ')})`;
}

export async function groupCheckpoint(vms: VmFolder[], options: GroupCheckpointOptions = {}): Promise<GroupCheckpointResult> {
  const command = options.command ?? 'checkpoint create (group)';
  const group = randomGuid();
  const created = new Date();
  const name = options.name ?? defaultGroupName(created);
  const planned = await Promise.all(vms.map(async (vm) => ({ vm, ...(await planCheckpointOf(vm, { name, created, group })) })));
  const sizes = await Promise.all(vms.map(async (vm) => ({ vm, bytes: checkpointBytes(vm, await virtualSizes(vm)) })));
  await ensureGroupSpace(sizes, `the group checkpoint "${name}"`);
  await runGroup(planned, group, command, options);
  return { group, created: created.toISOString(), checkpoints: planned.map((p) => ({ vm: p.vm.manifest.name, folder: p.vm.folder, checkpoint: checkpointInfo(p.vm.manifest, p.checkpoint) })) };
}

export interface GroupRemoveResult {
  group: string;
  /** Each member's removal; `running`: its worker removed it while the guest ran (runtime/live-group-remove.ts). */
  vms: Array<{ vm: string; folder: string; running: boolean; result: RemoveResult }>;
}

/** Removes the group's checkpoint from every VM, all or none; then each VM's layers merge as a single removal's would. */
export async function groupRemove(vms: VmFolder[], group: string, options: RemoveOptions = {}): Promise<GroupRemoveResult> {
  const command = options.command ?? 'checkpoint remove (group)';
  const planned: Array<{ vm: VmFolder; removal: PlannedRemoval }> = [];
  for (const vm of vms) {
    const member = vm.manifest.checkpoints.find((c) => c.group === group);
    if (!member) throw new DiskchainError('CHECKPOINT_NOT_FOUND', `${vm.folder} has no checkpoint of group ${group}; nothing was removed from any VM`, { file: vm.folder, group });
    planned.push({ vm, removal: await planRemoval(vm, member, options) });
  }
  await ensureGroupSpace(
    planned.map((p) => ({ vm: p.vm, bytes: collapsesBytesNeeded(p.removal.forecasts) })),
    `removing group ${group} (its layers merge with their only child)`,
  );
  const txs = await runGroup(planned.map((p) => ({ vm: p.vm, plan: p.removal.plan })), group, command, options);
  const out: GroupRemoveResult['vms'] = [];
  for (const [i, p] of planned.entries()) out.push({ vm: p.vm.manifest.name, folder: p.vm.folder, running: false, result: await settleRemoval(txs[i]!, p.removal, { ...options, command }) });
  return { group, vms: out };
}
