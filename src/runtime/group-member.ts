/**
 * A running VM's part in a group checkpoint, inside its worker. The coordinator (live-group.ts, where
 * the whole protocol and its crash rules are described) speaks to it over one control connection:
 *
 *   group-prepare {group, members, name, created, type?}   plan, record, children, freeze (production);
 *                                                          from here the session holds the worker's turn
 *   group-freeze                                           production: the guest's file systems frozen
 *   group-pause                                            QMP stop, flush, children again, state (standard):
 *                                                          the member's vote; it waits for the decision
 *   group-commit | group-abort                             commit, switch, cont, thaw | roll back, cont, thaw
 *
 *   prepared ──pause──► paused ──commit──► (committed, running on the new children)
 *      │                  │ └────abort───► (rolled back, running on the old leaves)
 *      └── abort, or the coordinator lost ─► rolled back (no vote was given: nobody can have committed)
 *                         └── the coordinator lost ─► the decision file (checkpoint/group-decision.ts):
 *                                                      commit if claimed, else abort claimed and rolled back
 *
 * "Lost" is the coordinator's connection closing (a kill -9 closes it) or no request for
 * DECISION_TIMEOUT_MS (the guest stays paused meanwhile). A failure in a phase rolls this member
 * back at once and is the coordinator's answer; after the decision a member never rolls back: a
 * commit that fails turns the VM off and leaves the record, which recovery commits at the next start.
 */
import { DiskchainError } from '../io/errors.js';
import { claimGroupDecision, pruneGroupDecisions } from '../checkpoint/group-decision.js';
import type { CheckpointType } from '../checkpoint/manifest.js';
import type { ControlPeer } from './control.js';
import { LiveCheckpointRun, type LiveCheckpointResult } from './live-checkpoint.js';
import type { VmWorker, WorkerInternals } from './worker.js';

/** How long a member waits for its coordinator's next word before it settles alone, unless the coordinator says (`waitMs`, at most an hour). */
export const DECISION_TIMEOUT_MS = 120_000;

/** group-commit's answer: the member's live checkpoint and its VM's name. */
export type MemberCommitResult = LiveCheckpointResult & { vm: string };

const sessions = new WeakMap<ControlPeer, GroupSession>();

class GroupSession {
  private phase: 'prepared' | 'paused' | 'ended' = 'prepared';
  private chain: Promise<unknown> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private resolveDone!: () => void;
  readonly done = new Promise<void>((resolve) => (this.resolveDone = resolve));

  constructor(
    private readonly w: WorkerInternals,
    private readonly run: LiveCheckpointRun,
    private readonly group: { id: string; members: string[] },
    peer: ControlPeer,
    private readonly waitMs: number,
  ) {
    void peer.closed.then(() => this.lost("the coordinator's connection closed"));
    this.arm();
  }

  private arm(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.lost(`no word from the coordinator within ${this.waitMs} ms`), this.waitMs);
  }

  /** Steps run one after the other; none after the session ended. */
  private step<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(async () => {
      if (this.phase === 'ended') throw new DiskchainError('VM_STATE', `the group checkpoint ${this.group.id} is over here: nothing to ${name}`);
      return fn();
    });
    this.chain = next.catch(() => undefined);
    return next;
  }

  private end(): void {
    this.phase = 'ended';
    clearTimeout(this.timer);
    this.resolveDone();
  }

  freeze(): Promise<{ frozen: true }> {
    return this.step('freeze', async () => {
      if (this.phase !== 'prepared') throw new DiskchainError('INVALID_ARGUMENT', 'group-freeze comes after group-prepare, before group-pause');
      try {
        await this.run.freeze();
      } catch (e) {
        await this.abortHere();
        throw e;
      }
      this.arm();
      return { frozen: true as const };
    });
  }

  pause(): Promise<{ paused: true }> {
    return this.step('pause', async () => {
      if (this.phase !== 'prepared') throw new DiskchainError('INVALID_ARGUMENT', 'group-pause comes once, after group-prepare');
      clearTimeout(this.timer);
      try {
        await this.run.pause();
      } catch (e) {
        await this.abortHere();
        throw e;
      }
      this.phase = 'paused';
      this.arm();
      return { paused: true as const };
    });
  }

  commit(): Promise<MemberCommitResult> {
    return this.step('commit', async () => {
      if (this.phase !== 'paused') throw new DiskchainError('INVALID_ARGUMENT', 'group-commit comes after group-pause');
      return this.commitHere();
    });
  }

  abort(): Promise<{ aborted: true }> {
    return this.step('abort', async () => {
      await this.abortHere();
      return { aborted: true as const };
    });
  }

  private async commitHere(): Promise<MemberCommitResult> {
    clearTimeout(this.timer);
    try {
      return { ...(await this.run.commit()), vm: this.w.vm.manifest.name };
    } finally {
      this.end();
    }
  }

  private async abortHere(): Promise<void> {
    clearTimeout(this.timer);
    try {
      await this.run.abort();
    } finally {
      this.end();
    }
  }

  /** The coordinator is gone: settle by the decision file (see the top of the file). */
  private lost(why: string): Promise<void> {
    const next = this.chain.then(async () => {
      if (this.phase === 'ended') return;
      let decision: 'commit' | 'abort' = 'abort';
      // Without this member's vote nobody can have committed; with it, the decision file says.
      if (this.phase === 'paused') decision = await claimGroupDecision(this.group.members, this.group.id, 'abort', `the worker of ${this.w.vm.realFolder} (pid ${process.pid}): ${why}`);
      this.w.warn(`group checkpoint ${this.group.id}: ${why}; ${decision === 'commit' ? 'the group had decided to commit: committed' : 'rolled back'}`);
      if (decision === 'commit') await this.commitHere();
      else await this.abortHere();
      // Whichever member settles last finds no record of the group left and removes the decision.
      await pruneGroupDecisions(this.group.members[0]!);
    });
    this.chain = next.catch(() => undefined);
    return next.catch((e: unknown) => this.w.warn(`group checkpoint ${this.group.id}: settling without the coordinator failed: ${e instanceof Error ? e.message : String(e)}`));
  }
}

/** A group operation's common arguments (group-prepare, group-remove-prepare): the group id, the members' folders, how long to wait for the coordinator. */
export function parseGroupArgs(w: WorkerInternals, args: Record<string, unknown>, op: string): { group: { id: string; members: string[] }; waitMs: number } {
  const { group, members, waitMs } = args;
  const bad = (what: string): DiskchainError => new DiskchainError('INVALID_ARGUMENT', `${op}: ${what}`);
  if (typeof group !== 'string' || !/^[0-9a-f-]{36}$/.test(group)) throw bad('"group" is a group id');
  if (!Array.isArray(members) || members.length < 2 || members.length > 64 || !members.every((m): m is string => typeof m === 'string' && m.startsWith('/'))) throw bad('"members" lists the members\' folders (absolute paths)');
  if (!members.includes(w.vm.realFolder)) throw bad(`this VM (${w.vm.realFolder}) is not among the members`);
  if (waitMs !== undefined && !(typeof waitMs === 'number' && Number.isSafeInteger(waitMs) && waitMs > 0 && waitMs <= 3_600_000)) throw bad('"waitMs" is a number of ms, at most an hour');
  return { group: { id: group, members }, waitMs: typeof waitMs === 'number' ? waitMs : DECISION_TIMEOUT_MS };
}

function parsePrepare(w: WorkerInternals, args: Record<string, unknown>): { group: { id: string; members: string[] }; name: string; created: Date; type?: CheckpointType; waitMs: number } {
  const { name, created, type } = args;
  const common = parseGroupArgs(w, args, 'group-prepare');
  const bad = (what: string): DiskchainError => new DiskchainError('INVALID_ARGUMENT', `group-prepare: ${what}`);
  if (typeof name !== 'string') throw bad('"name" is the checkpoint\'s name');
  const at = typeof created === 'string' ? new Date(created) : undefined;
  if (!at || Number.isNaN(at.getTime())) throw bad('"created" is an ISO time');
  if (type !== undefined && type !== 'standard' && type !== 'production') throw bad('"type" is standard or production');
  return { ...common, name, created: at, ...(type ? { type } : {}) };
}

/**
 * A group operation's session on `peer`: `begin` runs in the worker's turn and gives the session and
 * the answer; the session then holds the turn until it is done (group checkpoints and removals).
 */
export function openSession<S extends { done: Promise<void> }, A>(w: WorkerInternals, name: string, sessions: WeakMap<ControlPeer, S>, peer: ControlPeer, begin: () => Promise<{ session: S; answer: A }>): Promise<A> {
  if (sessions.has(peer)) return Promise.reject(new DiskchainError('INVALID_ARGUMENT', 'a group operation is already open on this connection'));
  return new Promise((resolve, reject) => {
    w.exclusive(name, async () => {
      let opened: { session: S; answer: A };
      try {
        opened = await begin();
      } catch (e) {
        reject(e);
        return;
      }
      sessions.set(peer, opened.session);
      resolve(opened.answer);
      await opened.session.done;
      sessions.delete(peer);
    }).catch(reject);
  });
}

/** The session open on `peer`, or VM_STATE. */
export function sessionIn<S>(sessions: WeakMap<ControlPeer, S>, peer: ControlPeer, what: string): S {
  const s = sessions.get(peer);
  if (!s) throw new DiskchainError('VM_STATE', `no ${what} is open on this connection`);
  return s;
}

/** group-prepare: answers once prepared; the session then holds the worker's turn until it ends. */
function prepare(w: WorkerInternals, args: Record<string, unknown>, peer: ControlPeer): Promise<unknown> {
  const options = parsePrepare(w, args);
  return openSession(w, 'group checkpoint', sessions, peer, async () => {
    const run = await LiveCheckpointRun.begin(w, options);
    return { session: new GroupSession(w, run, options.group, peer, options.waitMs), answer: { prepared: true, type: run.type } };
  });
}

const sessionOf = (peer: ControlPeer): GroupSession => sessionIn(sessions, peer, 'group checkpoint');

/** Adds the group checkpoint's steps to a worker's control socket. */
export function registerGroupOperations(worker: VmWorker): void {
  const open = { exclusive: false };
  worker.register('group-prepare', prepare, open);
  worker.register('group-freeze', async (_w, _args, peer) => sessionOf(peer).freeze(), open);
  worker.register('group-pause', async (_w, _args, peer) => sessionOf(peer).pause(), open);
  worker.register('group-commit', async (_w, _args, peer) => sessionOf(peer).commit(), open);
  worker.register('group-abort', async (_w, _args, peer) => sessionOf(peer).abort(), open);
}
