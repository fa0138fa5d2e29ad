/**
 * Group checkpoints: several VMs checkpointed at one instant under one group id, all or none.
 * Two phases over the members' own transactions (transaction.ts), every VM's lock held throughout:
 *
 *   plan × VM        one checkpoint each: the same name, instant and group id (any refusal: none begun)
 *   record × VM      each record lists every member's folder
 *   prepare × VM     each VM's children and config made
 *   decide           `decision: commit` written into every member's record, before any commit
 *   commit × VM      each vm.json replaced
 *   finish × VM
 *
 * Any failure before the decision rolls every member back. After a crash, each member's recovery
 * (recover.ts) commits when any member's record carries the decision or any member's vm.json holds
 * the group's checkpoint, and rolls back otherwise: the members agree, whichever recovers first.
 */
import { randomGuid } from '../io/guid.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { checkpointInfo, forecastCheckpoint, planCheckpoint, type CheckpointInfo } from './create.js';
import { virtualSizes } from './disks.js';
import type { VmFolder } from './folder.js';
import { testPoint } from './test-points.js';
import { Transaction } from './transaction.js';

export interface GroupCheckpointOptions extends LongOperationOptions {
  name?: string;
  command?: string;
}

export interface GroupCheckpointResult {
  group: string;
  created: string;
  checkpoints: Array<{ vm: string; folder: string; checkpoint: CheckpointInfo }>;
}

export async function groupCheckpoint(vms: VmFolder[], options: GroupCheckpointOptions = {}): Promise<GroupCheckpointResult> {
  const command = options.command ?? 'checkpoint create (group)';
  const group = randomGuid();
  const created = new Date();
  const name = options.name ?? `Group (${created.toISOString().slice(0, 19).replace('T', ' ')})`;
  const planned = vms.map((vm) => ({ vm, ...planCheckpoint(vm.manifest, { name, created, group }) }));
  for (const p of planned) await forecastCheckpoint(p.vm, await virtualSizes(p.vm));
  const members = vms.map((vm) => vm.realFolder);
  const txs: Transaction[] = [];
  let decided = false;
  try {
    for (const p of planned) txs.push(await Transaction.begin(p.vm, { ...p.plan, group: { id: group, members, decision: null } }, command));
    for (const tx of txs) await tx.prepare(options.signal ? { signal: options.signal } : {});
    for (const tx of txs) {
      tx.record.group!.decision = 'commit';
      await tx.save();
      decided = true;
      testPoint('group:decided');
    }
  } catch (e) {
    if (!decided) for (const tx of txs) await tx.rollback().catch(() => undefined);
    throw e;
  }
  // Decided: from here every member commits (a failure is finished by recovery, never undone).
  for (const tx of txs) await tx.commit();
  for (const tx of txs) await tx.finish();
  return { group, created: created.toISOString(), checkpoints: planned.map((p) => ({ vm: p.vm.manifest.name, folder: p.vm.folder, checkpoint: checkpointInfo(p.vm.manifest, p.checkpoint) })) };
}
