/**
 * Removal of a group checkpoint when some or all of its VMs run: every member's checkpoint goes, or
 * none. A two-phase commit like the group checkpoint's (live-group.ts): this process (the CLI, the
 * console) coordinates; the running VMs' workers (group-remove-member.ts, one control connection
 * each) and the off VMs' own transactions (opened here with their locks) take part:
 *
 *   classify           each VM running (its worker answers) or not (its lock taken here)
 *   check × off        the VM's member of the group, the removal planned, its merges forecast
 *   prepare × running  group-remove-prepare: refused when the worker is busy; the member found, its
 *                      removal planned and forecast, its record written; the answer is its vote
 *   space              every member's merges summed per file system: NO_SPACE
 *   record × off       each off member's record (group, coordinated)
 *   decide             the commit point: `commit` claimed in <first member>/journal/<group>.remove.decision
 *                      (checkpoint/group-decision.ts), created once, never replaced
 *   remove × VM        all at once. Running: group-remove-commit (the tree, then the merges live while
 *                      the guest writes); off: the engine's commit, then its merges. Progress: the sum
 *                      of every member's (a running one's polled); a cancel reaches every member
 *   end                the decision file pruned once no member holds a record of the removal
 *
 * Every check comes before the decision, and a failure there (a member without the group, a busy
 * worker, no space, a worker that died) aborts every member: nothing changes anywhere. After the
 * decision nothing is undone: every member's checkpoint goes. A cancel then stops the merges only
 * (the checkpoints are gone; their layers stay unnamed and merge later, as a single removal's).
 *
 * Crash safety:
 *  - the coordinator dies before the decision: each worker sees its connection close, claims abort
 *    and rolls back; each off VM's record is rolled back at its next opening (recovery claims abort);
 *  - the coordinator dies after it: each running member finds `commit` in the decision file and
 *    removes on its own (the merges live); each off VM's record is committed, and its merges run, at
 *    its next opening (vm check --repair, vm start, the next group removal: recover.ts);
 *  - a worker dies after the decision: its record is committed at the VM's next start.
 */
import { DiskchainError, isDiskchainError, throwIfAborted } from '../io/errors.js';
import type { VmFolder } from '../checkpoint/folder.js';
import { collapsesBytesNeeded } from '../checkpoint/collapse.js';
import { claimGroupDecision, pruneGroupDecisions } from '../checkpoint/group-decision.js';
import { ensureGroupSpace, type GroupRemoveResult } from '../checkpoint/group.js';
import { planRemoval, settleRemoval, type PlannedRemoval, type RemoveOptions, type RemoveResult } from '../checkpoint/remove.js';
import { testPoint } from '../checkpoint/test-points.js';
import { Transaction } from '../checkpoint/transaction.js';
import { callControl, ControlClient } from './control.js';
import type { RemoveMemberVote } from './group-remove-member.js';
import { classify, closeMembers, settleAll, type Member } from './live-group.js';
import type { LiveRemoveProgress } from './live-remove.js';

/** How often a running member's progress is asked for. */
const POLL_MS = 250;
const PREPARE_MS = 300_000;
/** A member's merges run as long as they take: its answer comes when they are over. */
const REMOVE_MS = 7 * 24 * 3600 * 1000;
/** How long a running member waits for the decision once it voted. */
const WAIT_MS = 600_000;

/** A member as this removal sees it: how it is reached, what it removes, its progress. */
interface Part {
  m: Member;
  vote?: RemoveMemberVote;
  planned?: PlannedRemoval;
  tx?: Transaction;
  prepared: boolean;
  /** Its removal is over (done, failed or cancelled). */
  settled?: boolean;
  progress: { done: number; total: number };
  result?: RemoveResult;
}

function offVm(p: Part): VmFolder {
  if (p.m.kind !== 'off') throw new Error('internal: a running member has no folder opened here');
  return p.m.vm;
}

/** Every check, every member's vote and the off members' records; throws (after aborting every member) on the first failure. */
async function prepareAll(parts: Part[], group: string, reals: string[], options: RemoveOptions, command: string): Promise<void> {
  const offs = parts.filter((p) => p.m.kind === 'off');
  for (const p of offs) {
    const vm = offVm(p);
    const member = vm.manifest.checkpoints.find((c) => c.group === group);
    if (!member) throw new DiskchainError('CHECKPOINT_NOT_FOUND', `${vm.folder} has no checkpoint of group ${group}; nothing was removed from any VM`, { file: vm.folder, group });
    p.planned = await planRemoval(vm, member, options);
  }
  throwIfAborted(options.signal);
  const args = { group, members: reals, subtree: options.subtree ?? false, waitMs: WAIT_MS };
  await settleAll(
    parts.map(async (p) => {
      if (p.m.kind !== 'running') return;
      p.m.client = await ControlClient.connect(p.m.control);
      p.vote = (await p.m.client.call('group-remove-prepare', args, { timeoutMs: PREPARE_MS })) as RemoveMemberVote;
      p.prepared = true;
    }),
  );
  testPoint('live-group-remove:prepared');
  await ensureGroupSpace(
    parts.map((p) => ({ vm: { realFolder: p.m.real }, bytes: p.vote?.bytesNeeded ?? collapsesBytesNeeded(p.planned!.forecasts) })),
    `removing group ${group} (its layers merge with their only child)`,
  );
  for (const p of offs) {
    p.tx = await Transaction.begin(offVm(p), { ...p.planned!.plan, group: { id: group, members: reals, decision: null, coordinated: true } }, command);
  }
  throwIfAborted(options.signal);
}

/** Before the decision: every running member rolled back, every off member's record too. */
async function abortAll(parts: Part[]): Promise<void> {
  await Promise.allSettled(
    parts.map(async (p) => {
      if (p.m.kind === 'running') {
        if (p.prepared) await p.m.client!.call('group-remove-abort', {}, { timeoutMs: PREPARE_MS });
      } else if (p.tx && !p.tx.committed) await p.tx.rollback();
    }),
  );
}

/** After the decision: one member's removal (its tree, then its merges). */
async function removeMember(p: Part, options: RemoveOptions, command: string, report: () => void): Promise<void> {
  if (p.m.kind === 'running') {
    p.result = (await p.m.client!.call('group-remove-commit', {}, { timeoutMs: REMOVE_MS })) as RemoveResult;
    return;
  }
  await p.tx!.commit();
  await p.tx!.finish();
  const onProgress = (done: number, total: number): void => {
    p.progress = { done, total };
    report();
  };
  p.result = await settleRemoval(p.tx!, p.planned!, { ...options, command, onProgress });
}

/**
 * While the members remove: each running member's progress polled (remove-progress) when asked for,
 * and once the signal aborts, remove-cancel sent to each running member still removing, every round
 * (one sent before its removal began would find nothing to cancel).
 */
async function watchMembers(parts: Part[], options: RemoveOptions, report: () => void, watching: { stop: boolean }): Promise<void> {
  while (!watching.stop) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    for (const p of parts) {
      if (p.m.kind !== 'running' || p.settled || watching.stop) continue;
      if (options.signal?.aborted) await callControl(p.m.control, 'remove-cancel', {}, { timeoutMs: 10_000 }).catch(() => undefined);
      if (!options.onProgress) continue;
      const r = (await callControl(p.m.control, 'remove-progress', {}, { timeoutMs: 10_000 }).catch(() => null)) as LiveRemoveProgress | null;
      if (r && r.total > 0) p.progress = { done: r.done, total: r.total };
    }
    report();
  }
}

/** Removes the group's checkpoint from every VM, all or none, whether each runs or not (see the top of the file). */
export async function liveGroupRemove(folders: string[], group: string, options: RemoveOptions = {}): Promise<GroupRemoveResult> {
  if (folders.length < 2) throw new DiskchainError('INVALID_ARGUMENT', 'a group removal names two VMs or more (one VM: checkpoint remove)');
  const command = options.command ?? 'checkpoint remove (group)';
  const members = await classify(folders, command);
  try {
    const reals = members.map((m) => m.real);
    const parts: Part[] = members.map((m) => ({ m, prepared: false, progress: { done: 0, total: 0 } }));
    try {
      await prepareAll(parts, group, reals, options, command);
      const decision = await claimGroupDecision(reals, group, 'commit', `the coordinator (pid ${process.pid}, ${command})`, 'remove');
      if (decision !== 'commit') throw new DiskchainError('ABORTED', `a member of group ${group} gave up waiting and rolled back: nothing was removed`);
      testPoint('live-group-remove:decided');
    } catch (e) {
      await abortAll(parts);
      throw e;
    }
    // Decided: every member removes; nothing is undone from here.
    const report = (): void => {
      const total = parts.reduce((s, p) => s + p.progress.total, 0);
      if (total > 0) options.onProgress?.(Math.min(total, parts.reduce((s, p) => s + p.progress.done, 0)), total);
    };
    const cancel = (): void => {
      for (const p of parts) if (p.m.kind === 'running' && !p.settled) void callControl(p.m.control, 'remove-cancel').catch(() => undefined);
    };
    options.signal?.addEventListener('abort', cancel, { once: true });
    const watching = { stop: false };
    const watcher = options.onProgress || options.signal ? watchMembers(parts, options, report, watching) : Promise.resolve();
    const failures: Array<{ folder: string; error: unknown }> = [];
    try {
      await Promise.all(
        parts.map((p) =>
          removeMember(p, options, command, report)
            .catch((error: unknown) => void failures.push({ folder: p.m.folder, error }))
            .finally(() => (p.settled = true)),
        ),
      );
    } finally {
      watching.stop = true;
      options.signal?.removeEventListener('abort', cancel);
      await watcher;
    }
    await pruneGroupDecisions(reals[0]!).catch(() => undefined);
    if (failures.length > 0) {
      const text = failures.map((f) => `${f.folder}: ${f.error instanceof Error ? f.error.message : String(f.error)}`).join('; ');
      if (failures.every((f) => isDiskchainError(f.error) && f.error.code === 'ABORTED')) {
        throw new DiskchainError('ABORTED', `group ${group} was removed from every VM; merging its layers was cancelled (they stay unnamed and merge at the next removal, vm check --repair or start): ${text}`, { group });
      }
      throw new DiskchainError('IO', `group ${group} was decided and is removed, but not every member could finish; each finishes at its next start (vm check --repair): ${text}`, { group });
    }
    return {
      group,
      vms: parts.map((p) => ({ vm: p.vote?.vm ?? offVm(p).manifest.name, folder: p.m.folder, running: p.m.kind === 'running', result: p.result! })),
    };
  } finally {
    await closeMembers(members);
  }
}
