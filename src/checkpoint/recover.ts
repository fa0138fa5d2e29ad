/**
 * Finishing or rolling back what a dead process left in journal/ (see transaction.ts):
 *
 *   committed (vm.json names the record)          → finish: delete what the new tree dropped
 *   collapse, not committed                       → resume the copy, commit, finish
 *   group member, not committed, group decided    → prepare again (idempotent), commit, finish
 *   anything else, not committed                  → roll back: undo the actions, drop the record
 *
 * A group decided to commit when any member's record says so, or any member's vm.json already shows
 * the group's change (records are marked in every member before the first commit): a group
 * checkpoint is there, or a group removal's checkpoint is gone. A coordinated group (running members,
 * runtime/live-group.ts, a removal: live-group-remove.ts) decided when its decision file says commit
 * (group-decision.ts, one file per group and operation); recovery
 * claims abort when it says nothing. Decisions no member needs any more are removed at the end.
 */
import { join } from 'node:path';
import { readdir } from 'node:fs/promises';
import { removeFile, syncFolder } from '../io/durable.js';
import { DiskchainError } from '../io/errors.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { runCollapse, settleFollowUp } from './collapse.js';
import { claimGroupDecision, groupOperationOf, pruneGroupDecisions } from './group-decision.js';
import { JOURNAL_DIR, MANIFEST_FILE, readManifest, type VmFolder } from './folder.js';
import { listRecords, readRecord, Transaction, type TransactionRecord } from './transaction.js';

export interface RecoveryReport {
  transaction: string;
  operation: TransactionRecord['operation'];
  outcome: 'finished' | 'rolled back';
  started: string;
  command: string;
}

/** Whether the group `record` belongs to decided to commit (see the comment at the top). */
export async function groupDecided(record: TransactionRecord): Promise<boolean> {
  const group = record.group;
  if (!group) return false;
  if (group.coordinated) {
    // The decision file is the commit point; none yet: abort is claimed, so that a coordinator still
    // alive can never commit the group afterwards.
    return (await claimGroupDecision(group.members, group.id, 'abort', `recovery of ${record.command} (pid ${record.pid})`, groupOperationOf(record))) === 'commit';
  }
  if (group.decision === 'commit') return true;
  for (const member of group.members) {
    for (const path of await listRecords(member)) {
      const other = await readRecord(path).catch(() => undefined);
      if (other?.group?.id === group.id && other.group.decision === 'commit') return true;
    }
    const m = await readManifest(member).catch(() => undefined);
    if (!m) continue;
    const holds = m.checkpoints.some((c) => c.group === group.id);
    if (record.operation === 'checkpoint-create' ? holds : !holds) return true;
  }
  return false;
}

/** Settles every record in the VM's journal (write lock held), oldest first. */
export async function recoverVm(vm: VmFolder, options: LongOperationOptions = {}): Promise<RecoveryReport[]> {
  const reports: RecoveryReport[] = [];
  // A record cut before its rename into place (an operation that never began), and a commit's
  // vm.json.tmp cut before its rename (the record below settles that commit): leftovers, deleted.
  const journal = join(vm.realFolder, JOURNAL_DIR);
  const partial = (await readdir(journal).catch(() => [] as string[])).filter((n) => n.endsWith('.json.tmp'));
  for (const n of partial) await removeFile(join(journal, n));
  if (partial.length > 0) await syncFolder(journal);
  await removeFile(join(vm.realFolder, `${MANIFEST_FILE}.tmp`));
  // Collapses first (a removal's record waits for the merges it started), then by start time.
  const records = await Promise.all((await listRecords(vm.realFolder)).map(async (path) => ({ path, record: await readRecord(path) })));
  records.sort((a, b) => Number(b.record.collapse !== null) - Number(a.record.collapse !== null) || (a.record.started < b.record.started ? -1 : 1));
  for (const { path, record } of records) {
    const tx = Transaction.resume(vm, record, path);
    const report = (outcome: RecoveryReport['outcome']): RecoveryReport => ({ transaction: record.id, operation: record.operation, outcome, started: record.started, command: record.command });
    if (!tx.committed && record.operation !== 'vm-create' && record.baseGeneration !== vm.manifest.generation) {
      throw new DiskchainError('JOURNAL_MISMATCH', `the interrupted ${record.operation} (${record.command}, started ${record.started}) began from vm.json generation ${record.baseGeneration}, but vm.json is at generation ${vm.manifest.generation}: it cannot be finished or rolled back safely. Inspect it with vm check`, { file: path });
    }
    if (tx.committed) {
      await tx.finish();
      if (record.followUp.length > 0) await settleFollowUp(tx, options);
      reports.push(report('finished'));
    } else if (record.collapse) {
      await runCollapse(tx, options);
      reports.push(report('finished'));
    } else if (record.group && (await groupDecided(record))) {
      await tx.prepare(options);
      await tx.commit();
      await tx.finish();
      if (record.followUp.length > 0) await settleFollowUp(tx, options);
      reports.push(report('finished'));
    } else {
      await tx.rollback();
      reports.push(report('rolled back'));
    }
  }
  // A group's decision lives with its first member: pruned there too once no member needs it.
  const firsts = new Set([vm.realFolder, ...records.flatMap(({ record }) => (record.group?.coordinated ? [record.group.members[0]!] : []))]);
  for (const folder of firsts) await pruneGroupDecisions(folder);
  return reports;
}

/** True when the folder's journal holds records (an operation in progress or interrupted). */
export async function hasPendingRecords(folder: string): Promise<boolean> {
  const names = await readdir(join(folder, JOURNAL_DIR)).catch(() => [] as string[]);
  return names.some((n) => n.endsWith('.json') || n.endsWith('.json.tmp'));
}
