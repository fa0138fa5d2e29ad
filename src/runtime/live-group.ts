/**
 * Group checkpoints of running VMs (and any mix of running and off ones): several VMs checkpointed at
 * one instant under one group id, all or none, the guests paused together. A two-phase commit whose
 * coordinator is this process (the CLI, the console) and whose participants are the running VMs'
 * workers (group-member.ts, over one control connection each) and the off VMs' own transactions
 * (opened here with their locks, as the engine's group checkpoint does):
 *
 *   classify           each VM running (its worker answers) or not (its lock taken here)
 *   plan, forecast     off VMs: the checkpoint and its space (NO_SPACE before anything); running VMs
 *                      forecast their own in prepare
 *   prepare × VM       off: record (group, coordinated) and children; running: group-prepare (plan,
 *                      record, children)
 *   freeze × running   group-freeze, all at once: production: the guest's file systems frozen (its
 *                      vCPUs still run), so that no guest is stopped while another one freezes
 *   pause × running    group-pause, all at once: QMP stop, writes flushed, standard: memory saved.
 *                      An answer is the member's vote
 *   decide             the commit point: `commit` claimed in the decision file, <first member>/journal/
 *                      <group>.decision (checkpoint/group-decision.ts), created once, never replaced
 *   commit × VM        running: group-commit (vm.json, the exports switched, QMP cont, thaw), all at
 *                      once; off: vm.json
 *   end                the decision file removed; the result reports every guest's pause and the longest
 *
 * Any failure before the decision (a worker that dies or fails its phase, no space, a member that
 * already gave up and claimed abort) aborts every member: group-abort to each running one (rolled
 * back, resumed on its old leaves, thawed), the off ones rolled back. After the decision nothing is
 * undone: a member that fails to commit is finished by recovery (its record stays).
 *
 * Crash safety, like a 2PC with a durable commit point:
 *  - the coordinator dies (kill -9) before the decision: every worker sees its connection close and
 *    rolls back (a member that voted first claims abort, so no late coordinator can commit); the off
 *    VMs' records are rolled back by their next opening (recovery claims abort too);
 *  - the coordinator dies after the decision: every worker finds `commit` in the decision file and
 *    commits and resumes; the off VMs' records are committed by their next opening;
 *  - a worker dies: QEMU dies with it (vm-runtime.md); before the decision the coordinator aborts the
 *    others, after it the dead VM's record is committed at its next start;
 *  - a coordinator that is alive but silent: each worker waits as long as the slowest step may take
 *    (`waitMs`, 11 minutes; the guest paused), then settles as if it had died.
 * So every VM ends with the group's checkpoint or without it, the same for all, and every guest that
 * ran is running again.
 */
import { DiskchainError, throwIfAborted } from '../io/errors.js';
import { randomGuid } from '../io/guid.js';
import type { LongOperationOptions } from '../ops/progress.js';
import { checkpointBytes, checkpointInfo, planCheckpointOf, type CheckpointInfo } from '../checkpoint/create.js';
import { virtualSizes } from '../checkpoint/disks.js';
import type { VmFolder } from '../checkpoint/folder.js';
import { claimGroupDecision, removeGroupDecision } from '../checkpoint/group-decision.js';
import { defaultGroupName, ensureGroupSpace } from '../checkpoint/group.js';
import type { Checkpoint, CheckpointType } from '../checkpoint/manifest.js';
import { testPoint } from '../checkpoint/test-points.js';
import { Transaction } from '../checkpoint/transaction.js';
import { openVmFolder } from '../checkpoint/vms.js';
import { ControlClient } from './control.js';
import type { MemberCommitResult } from './group-member.js';
import { liveWorker } from './status.js';

export interface LiveGroupOptions extends LongOperationOptions {
  name?: string;
  /** Standard or production for the running VMs (default: each VM's setting); off VMs take disks only. */
  type?: CheckpointType;
  command?: string;
}

export interface GroupMemberResult {
  vm: string;
  folder: string;
  checkpoint: CheckpointInfo;
  running: boolean;
  /** How long this guest was paused (QMP stop to cont), in ms; null for a VM that was off. */
  pauseMs: number | null;
  /** Why a production checkpoint became standard. */
  fallback: string | null;
  stateBytes: number | null;
}

export interface LiveGroupResult {
  group: string;
  created: string;
  /** The longest pause of any guest, in ms (null when no VM was running). */
  pauseMs: number | null;
  checkpoints: GroupMemberResult[];
}

/** A running member: its worker's connection. */
export interface LiveMember {
  kind: 'running';
  folder: string;
  real: string;
  control: string;
  client?: ControlClient;
  prepared: boolean;
  result?: MemberCommitResult;
}

/** An off member: opened here (write lock) with its transaction. */
export interface OffMember {
  kind: 'off';
  folder: string;
  real: string;
  vm: VmFolder;
  tx?: Transaction;
  checkpoint?: Checkpoint;
}

export type Member = LiveMember | OffMember;

const PREPARE_MS = 300_000;
const PAUSE_MS = 600_000;
const COMMIT_MS = 300_000;

/** Opens every member: a running VM's worker is reached later, an off VM is opened for writing now (the group removal's too). */
export async function classify(folders: string[], command: string): Promise<Member[]> {
  const members: Member[] = [];
  try {
    for (const folder of folders) {
      const live = await liveWorker(folder);
      const member: Member = live ? { kind: 'running', folder, real: live.real, control: live.control, prepared: false } : await openVmFolder(folder, { command }).then(({ vm }) => ({ kind: 'off' as const, folder, real: vm.realFolder, vm }));
      if (members.some((m) => m.real === member.real)) {
        if (member.kind === 'off') await member.vm.close();
        throw new DiskchainError('INVALID_ARGUMENT', `${folder} is named twice`);
      }
      members.push(member);
    }
    return members;
  } catch (e) {
    await closeMembers(members);
    throw e;
  }
}

export async function closeMembers(members: Member[]): Promise<void> {
  for (const m of members) {
    if (m.kind === 'running') m.client?.close();
    else await m.vm.close().catch(() => undefined);
  }
}

/** Every member's part before the decision; throws (nothing undone yet) on the first failure. */
async function prepareAll(members: Member[], ids: { group: string; realFolders: string[]; name: string; created: Date }, options: LiveGroupOptions, command: string): Promise<void> {
  const off = members.filter((m): m is OffMember => m.kind === 'off');
  const planned = await Promise.all(off.map(async (m) => ({ m, ...(await planCheckpointOf(m.vm, { name: ids.name, created: ids.created, group: ids.group })) })));
  await ensureGroupSpace(await Promise.all(off.map(async (m) => ({ vm: m.vm, bytes: checkpointBytes(m.vm, await virtualSizes(m.vm)) }))), `the group checkpoint "${ids.name}"`);
  for (const p of planned) {
    p.m.checkpoint = p.checkpoint;
    p.m.tx = await Transaction.begin(p.m.vm, { ...p.plan, group: { id: ids.group, members: ids.realFolders, decision: null, coordinated: true } }, command);
    await p.m.tx.prepare(options.signal ? { signal: options.signal } : {});
  }
  throwIfAborted(options.signal);
  const live = members.filter((m): m is LiveMember => m.kind === 'running');
  // A member waits for the next word as long as the slowest step may take (another member's state save).
  const args = { group: ids.group, members: ids.realFolders, name: ids.name, created: ids.created.toISOString(), waitMs: PAUSE_MS + 60_000, ...(options.type ? { type: options.type } : {}) };
  await settleAll(
    live.map(async (m) => {
      m.client = await ControlClient.connect(m.control);
      await m.client.call('group-prepare', args, { timeoutMs: PREPARE_MS });
      m.prepared = true;
    }),
  );
  throwIfAborted(options.signal);
  await settleAll(live.map((m) => m.client!.call('group-freeze', {}, { timeoutMs: PREPARE_MS })));
  // Every guest paused together; each answer is that member's vote.
  await settleAll(live.map((m) => m.client!.call('group-pause', {}, { timeoutMs: PAUSE_MS })));
  testPoint('live-group:paused');
}

/** Waits for every promise; throws the first failure once all have settled. */
export async function settleAll(promises: Array<Promise<unknown>>): Promise<void> {
  const failed = (await Promise.allSettled(promises)).find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Before the decision: every member rolled back, every guest resumed on its old leaves. */
async function abortAll(members: Member[]): Promise<void> {
  await Promise.allSettled(
    members.map(async (m) => {
      if (m.kind === 'running') {
        if (m.prepared) await m.client!.call('group-abort', {}, { timeoutMs: COMMIT_MS });
      } else if (m.tx && !m.tx.committed) await m.tx.rollback();
    }),
  );
}

/**
 * Checkpoints every VM at one instant under one group id, all or none, whether each runs or not
 * (see the top of the file). The result reports each guest's pause and the longest.
 */
export async function liveGroupCheckpoint(folders: string[], options: LiveGroupOptions = {}): Promise<LiveGroupResult> {
  if (folders.length < 2) throw new DiskchainError('INVALID_ARGUMENT', 'a group checkpoint takes two VMs or more');
  const command = options.command ?? 'checkpoint create (group)';
  const members = await classify(folders, command);
  try {
    const group = randomGuid();
    const created = new Date();
    const ids = { group, realFolders: members.map((m) => m.real), name: options.name ?? defaultGroupName(created), created };
    try {
      await prepareAll(members, ids, options, command);
      throwIfAborted(options.signal);
      const decision = await claimGroupDecision(ids.realFolders, group, 'commit', `the coordinator (pid ${process.pid}, ${command})`);
      if (decision !== 'commit') throw new DiskchainError('ABORTED', `a member of group ${group} gave up waiting and rolled back: nothing was checkpointed`);
      testPoint('live-group:decided');
    } catch (e) {
      await abortAll(members);
      throw e;
    }
    // Decided: every member commits; a failure is finished by recovery, never undone.
    const failures: string[] = [];
    await Promise.all(
      members.map(async (m) => {
        try {
          if (m.kind === 'running') m.result = (await m.client!.call('group-commit', {}, { timeoutMs: COMMIT_MS })) as MemberCommitResult;
          else {
            await m.tx!.commit();
            await m.tx!.finish();
          }
        } catch (e) {
          failures.push(`${m.folder}: ${e instanceof Error ? e.message : String(e)}`);
        }
      }),
    );
    if (failures.length > 0) {
      throw new DiskchainError('IO', `group ${group} was decided and committed, but not every member could finish; each finishes at its next start (vm check --repair): ${failures.join('; ')}`, { group, failures });
    }
    await removeGroupDecision(ids.realFolders, group);
    const checkpoints = members.map((m): GroupMemberResult => {
      if (m.kind === 'running') {
        const r = m.result!;
        return { vm: r.vm, folder: m.folder, checkpoint: r.checkpoint, running: true, pauseMs: r.pauseMs, fallback: r.fallback, stateBytes: r.stateBytes };
      }
      return { vm: m.vm.manifest.name, folder: m.folder, checkpoint: checkpointInfo(m.vm.manifest, m.checkpoint!), running: false, pauseMs: null, fallback: null, stateBytes: null };
    });
    const pauses = checkpoints.flatMap((c) => (c.pauseMs === null ? [] : [c.pauseMs]));
    return { group, created: created.toISOString(), pauseMs: pauses.length > 0 ? Math.max(...pauses) : null, checkpoints };
  } finally {
    await closeMembers(members);
  }
}
