/**
 * A running VM's part in a group removal, inside its worker. The coordinator (live-group-remove.ts,
 * where the whole protocol and its crash rules are described) speaks to it over one control connection:
 *
 *   group-remove-prepare {group, members, subtree?, waitMs?}   refused at once when another operation
 *                            runs; then, holding the worker's turn: the VM's member of the group found,
 *                            the removal planned and its merges forecast (NO_SPACE), the record written
 *                            (group, coordinated). The answer is the member's vote
 *   group-remove-commit      the tree committed (the checkpoint gone), then its layers merged live as a
 *                            single removal's (live-remove.ts: progress remove-progress, cancel
 *                            remove-cancel); answers when the merges are over
 *   group-remove-abort       the record rolled back: nothing changed
 *
 *   prepared ──commit──► committing ──► ended (removed; merged, or left to merge after a cancel)
 *      ├──abort──────────────────────► ended (nothing changed)
 *      └── the coordinator lost ─► the removal's decision file (checkpoint/group-decision.ts): commit
 *                                  if claimed (the removal then runs here, on its own), else abort
 *                                  claimed and rolled back
 *
 * "Lost" is the coordinator's connection closing (a kill -9 closes it) or no word for `waitMs`. After
 * the decision a member never rolls back: a tree commit that fails turns the VM off and leaves the
 * record, which recovery commits at the next start (the decision file says commit).
 */
import { DiskchainError } from '../io/errors.js';
import { collapsesBytesNeeded } from '../checkpoint/collapse.js';
import { claimGroupDecision, pruneGroupDecisions } from '../checkpoint/group-decision.js';
import type { PlannedRemoval, RemoveResult } from '../checkpoint/remove.js';
import { testPoint } from '../checkpoint/test-points.js';
import { Transaction } from '../checkpoint/transaction.js';
import type { ControlPeer } from './control.js';
import { openSession, parseGroupArgs, sessionIn } from './group-member.js';
import { collapseRemoved, planLiveRemoval, requireRunning, trackRemoval } from './live-remove.js';
import type { VmWorker, WorkerInternals } from './worker.js';

const COMMAND = 'checkpoint remove (group, running)';

/** group-remove-prepare's answer: the member's vote, what it will remove and the space its merges need. */
export interface RemoveMemberVote {
  vm: string;
  checkpoint: { id: string; name: string };
  bytesNeeded: number;
}

const sessions = new WeakMap<ControlPeer, RemoveSession>();

class RemoveSession {
  private phase: 'prepared' | 'settling' | 'committing' | 'ended' = 'prepared';
  private timer: NodeJS.Timeout;
  private outcome: Promise<RemoveResult> | undefined;
  private settling: Promise<void> = Promise.resolve();
  private resolveDone!: () => void;
  readonly done = new Promise<void>((resolve) => (this.resolveDone = resolve));

  constructor(
    private readonly w: WorkerInternals,
    private readonly tx: Transaction,
    private readonly planned: PlannedRemoval,
    private readonly group: { id: string; members: string[] },
    peer: ControlPeer,
    waitMs: number,
  ) {
    void peer.closed.then(() => this.lost("the coordinator's connection closed"));
    this.timer = setTimeout(() => void this.lost(`no word from the coordinator within ${waitMs} ms`), waitMs);
  }

  private end(): void {
    this.phase = 'ended';
    clearTimeout(this.timer);
    this.resolveDone();
  }

  async commit(): Promise<RemoveResult> {
    if (this.phase === 'prepared') return this.commitHere();
    await this.settling;
    if (this.outcome) return this.outcome;
    throw new DiskchainError('ABORTED', `this member of the removal of group ${this.group.id} had given up on its coordinator and rolled back`);
  }

  async abort(): Promise<{ aborted: true }> {
    if (this.phase !== 'prepared') throw new DiskchainError('VM_STATE', `the removal of group ${this.group.id} is past its decision here: it cannot be aborted`);
    this.phase = 'settling';
    await this.abortHere();
    return { aborted: true as const };
  }

  /** Decided: the tree committed, then the merges (the worker's turn held until they are over). */
  private commitHere(): Promise<RemoveResult> {
    clearTimeout(this.timer);
    this.phase = 'committing';
    this.outcome = (async () => {
      try {
        return await trackRemoval(this.w, undefined, async (signal, progress) => {
          try {
            await this.tx.commit();
            await this.tx.finish();
          } catch (e) {
            await this.w.end('Off', `removing group ${this.group.id} failed at its commit, the VM was turned off (its next start finishes it): ${e instanceof Error ? e.message : String(e)}`);
            throw e;
          }
          testPoint('live-group-remove:member-committed');
          return collapseRemoved(this.w, this.tx, this.planned, { signal, progress });
        });
      } finally {
        await pruneGroupDecisions(this.group.members[0]!).catch(() => undefined);
        this.end();
      }
    })();
    return this.outcome;
  }

  private async abortHere(): Promise<void> {
    clearTimeout(this.timer);
    try {
      await this.tx.rollback();
    } finally {
      this.end();
    }
  }

  /** The coordinator is gone before it said commit or abort: settle by the decision file. */
  private lost(why: string): void {
    if (this.phase !== 'prepared') return;
    this.phase = 'settling';
    this.settling = (async () => {
      const decision = await claimGroupDecision(this.group.members, this.group.id, 'abort', `the worker of ${this.w.vm.realFolder} (pid ${process.pid}): ${why}`, 'remove');
      this.w.warn(`removal of group ${this.group.id}: ${why}; ${decision === 'commit' ? 'the group had decided to remove: removing here' : 'rolled back'}`);
      if (decision === 'commit') {
        void this.commitHere().catch((e: unknown) => this.w.warn(`removal of group ${this.group.id}: ${e instanceof Error ? e.message : String(e)}`));
        return;
      }
      await this.abortHere();
      await pruneGroupDecisions(this.group.members[0]!);
    })().catch((e: unknown) => this.w.warn(`removal of group ${this.group.id}: settling without the coordinator failed: ${e instanceof Error ? e.message : String(e)}`));
  }
}

/** group-remove-prepare: refused when busy; answers the vote; the session then holds the worker's turn until it ends. */
function prepare(w: WorkerInternals, args: Record<string, unknown>, peer: ControlPeer): Promise<RemoveMemberVote> {
  const o = parseGroupArgs(w, args, 'group-remove-prepare');
  if (w.operation !== null) return Promise.reject(new DiskchainError('VM_BUSY', `${w.vm.folder} is busy (${w.operation}): nothing was removed from any VM`, { file: w.vm.folder, operation: w.operation }));
  requireRunning(w);
  return openSession(w, 'group checkpoint removal', sessions, peer, async () => {
    requireRunning(w);
    const checkpoint = w.vm.manifest.checkpoints.find((c) => c.group === o.group.id);
    if (!checkpoint) throw new DiskchainError('CHECKPOINT_NOT_FOUND', `${w.vm.folder} has no checkpoint of group ${o.group.id}; nothing was removed from any VM`, { file: w.vm.folder, group: o.group.id });
    const planned = await planLiveRemoval(w, checkpoint, { subtree: args.subtree === true });
    const tx = await Transaction.begin(w.vm, { ...planned.plan, group: { ...o.group, decision: null, coordinated: true } }, COMMAND);
    const answer: RemoveMemberVote = { vm: w.vm.manifest.name, checkpoint: { id: checkpoint.id, name: checkpoint.name }, bytesNeeded: collapsesBytesNeeded(planned.forecasts) };
    return { session: new RemoveSession(w, tx, planned, o.group, peer, o.waitMs), answer };
  });
}

const sessionOf = (peer: ControlPeer): RemoveSession => sessionIn(sessions, peer, 'group removal');

/** Adds the group removal's steps to a worker's control socket. */
export function registerGroupRemoveOperations(worker: VmWorker): void {
  const open = { exclusive: false };
  worker.register('group-remove-prepare', prepare, open);
  worker.register('group-remove-commit', async (_w, _args, peer) => sessionOf(peer).commit(), open);
  worker.register('group-remove-abort', async (_w, _args, peer) => sessionOf(peer).abort(), open);
}
