/**
 * Checkpoints and apply of a running VM, inside its worker (Hyper-V's Checkpoint-VM and
 * Restore-VMSnapshot on a running VM).
 *
 * Checkpoint (one transaction, checkpoint/transaction.ts):
 *
 *   plan, forecast         the checkpoint and one child per disk; NO_SPACE before anything (a
 *                          standard one also needs room for the memory)
 *   record                 journal/<tx>.json
 *   prepare                config, children (made while the guest runs)
 *   [production] freeze    guest-fsfreeze-freeze through the guest agent (its file systems flushed
 *                          and held still)
 *   ── the guest pauses ──
 *   QMP stop               every guest write drained to the worker
 *   flush                  the served leaves durable
 *   children again         only for a leaf whose identity changed since prepare (a VHDX leaf's
 *                          DataWriteGuid changes at its session's first write; the child records it)
 *   [standard] save state  memory and device state into Snapshots/<id>/state.vmstate
 *   commit                 vm.json: Now on the children
 *   switch                 each export swapped to the child over the served chain (old leaf
 *                          flushed, reopened read-only and read-locked; the layers below kept)
 *   QMP cont
 *   ── the guest runs ──    the pause is reported in ms
 *   [production] thaw
 *   finish                 the record dropped
 *
 * A failure before the commit rolls the transaction back and resumes the guest on its old leaves;
 * a failure to switch after the commit ends the VM (hard stop) rather than let the guest write a
 * file a checkpoint froze. A production checkpoint of a guest without a usable agent falls back to
 * standard (setting "production") or fails (setting "productionOnly"), as Hyper-V does.
 *
 * Apply: QEMU ends, the disks are closed, the engine's apply runs (checkpoint/apply.ts); a standard
 * checkpoint's state becomes Now's saved state and a new QEMU resumes from it (-incoming): the guest
 * is back at the checkpoint's instant. A production checkpoint leaves the VM off.
 */
import { DiskchainError } from '../io/errors.js';
import { ensureSpace } from '../ops/space.js';
import { applyCheckpoint, type ApplyResult } from '../checkpoint/apply.js';
import { checkpointInfo, forecastCheckpoint, planCheckpoint, type CheckpointInfo } from '../checkpoint/create.js';
import { virtualSizes } from '../checkpoint/disks.js';
import { SNAPSHOTS_DIR } from '../checkpoint/folder.js';
import type { Checkpoint, CheckpointType } from '../checkpoint/manifest.js';
import { resolveCheckpoint } from '../checkpoint/resolve.js';
import { readSavedState, savedStateFromCheckpoint } from '../checkpoint/saved-state.js';
import { Transaction, type Action, type Plan } from '../checkpoint/transaction.js';
import { testPoint } from '../checkpoint/test-points.js';
import { createChild } from '../chain/create-child.js';
import { sameIdentity } from '../chain/identity.js';
import type { LinkIdentity } from '../formats/types.js';
import { syncFolder } from '../io/durable.js';
import { rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { GuestAgentClient } from '../vm/guest-agent.js';
import { saveState } from '../vm/state-file.js';
import type { VmWorker, WorkerInternals } from './worker.js';

export interface LiveCheckpointResult {
  checkpoint: CheckpointInfo;
  /** How long the guest's vCPUs were stopped (QMP stop to cont), in ms; 0 when it was paused already. */
  pauseMs: number;
  /** Production: the file systems the guest agent froze (null: none was asked). */
  frozen: number | null;
  /** How long the file systems were frozen, in ms. */
  frozenMs: number | null;
  /** Standard: the state file's size. */
  stateBytes: number | null;
  /** Why a production checkpoint became standard. */
  fallback: string | null;
  /** Where the pause went, in ms: stop, flush, prepare (config and children), state, commit, switch, cont. */
  phases: Record<string, number>;
}

export interface LiveApplyResult extends ApplyResult {
  /** The checkpoint of Now taken first (checkpointFirst), with its pause. */
  checkpointFirst: LiveCheckpointResult | null;
  /** Running (a standard checkpoint: resumed from its state) or Off (production). */
  state: 'Running' | 'Off';
}

/** Adds the live operations (checkpoint, apply) to a worker's control socket. */
export function registerLiveOperations(worker: VmWorker): void {
  worker.register('checkpoint', (w, args) => liveCheckpoint(w, { ...(typeof args.name === 'string' ? { name: args.name } : {}), ...(args.type === 'standard' || args.type === 'production' ? { type: args.type } : {}) }));
  worker.register('apply', (w, args) => {
    if (typeof args.checkpoint !== 'string') throw new DiskchainError('INVALID_ARGUMENT', 'apply names a checkpoint');
    const first = args.checkpointFirst;
    return liveApply(w, args.checkpoint, { ...(typeof first === 'string' || typeof first === 'boolean' ? { checkpointFirst: first } : {}) });
  });
}

/** An agent that answers, or why there is none. */
async function reachAgent(w: WorkerInternals): Promise<GuestAgentClient | string> {
  if (!w.agentSocket) return 'the VM has no guest agent port (config.guestAgent is false)';
  try {
    return await GuestAgentClient.connect(w.agentSocket, { timeoutMs: 3000 });
  } catch (e) {
    return `the guest agent does not answer (${e instanceof Error ? e.message : String(e)})`;
  }
}

export interface LiveCheckpointOptions {
  name?: string;
  type?: CheckpointType;
  created?: Date;
  /** A member of a coordinated group checkpoint (live-group.ts): its id and the members' folders. */
  group?: { id: string; members: string[] };
}

/**
 * One live checkpoint in its phases (the diagram at the top): `begin` (plan, record, children),
 * `freeze` (production), `pause` (stop, flush, children again, state), `commit` (commit, switch, cont, thaw,
 * finish) or `abort` (roll back, cont, thaw). A single checkpoint runs them in a row; a group
 * member waits for its group's decision between pause and commit.
 */
export class LiveCheckpointRun {
  private frozen: number | null = null;
  private frozenAt = 0;
  private pausedAt = 0;
  private mark = 0;
  private stateBytes: number | null = null;
  private identities: Map<string, LinkIdentity> = new Map();
  readonly phases: Record<string, number> = {};

  private constructor(
    private readonly w: WorkerInternals,
    private readonly tx: Transaction,
    private readonly plan: Plan,
    private readonly checkpoint: Checkpoint,
    private readonly agent: GuestAgentClient | undefined,
    private readonly fallback: string | null,
    private readonly running: boolean,
  ) {}

  get type(): CheckpointType {
    return this.checkpoint.type;
  }

  static async begin(w: WorkerInternals, options: LiveCheckpointOptions = {}): Promise<LiveCheckpointRun> {
    if (!['Running', 'Paused'].includes(w.state)) throw new DiskchainError('VM_STATE', `the VM is ${w.state}; a checkpoint needs it Running or Paused`, { state: w.state });
    const vm = w.vm;
    const setting = vm.manifest.config.checkpointType;
    let type: CheckpointType = options.type ?? (setting === 'standard' ? 'standard' : 'production');
    let agent: GuestAgentClient | undefined;
    let fallback: string | null = null;
    if (type === 'production' && setting !== 'disabled') {
      const reached = await reachAgent(w);
      if (typeof reached === 'string') {
        if (setting === 'productionOnly') throw new DiskchainError('UNSUPPORTED', `a production checkpoint needs the guest agent: ${reached} (checkpoint type productionOnly)`);
        fallback = reached;
        type = 'standard';
      } else agent = reached;
    }
    let tx: Transaction | undefined;
    try {
      const command = options.group ? 'checkpoint create (group, running)' : 'checkpoint create (running)';
      const { plan, checkpoint } = planCheckpoint(vm.manifest, { ...(options.name !== undefined ? { name: options.name } : {}), ...(options.created ? { created: options.created } : {}), ...(options.group ? { group: options.group.id } : {}), type, command });
      const memory = type === 'standard' ? vm.manifest.config.memoryBytes : 0;
      await forecastCheckpoint(vm, await virtualSizes(vm));
      if (memory > 0) await ensureSpace(vm.path(`${SNAPSHOTS_DIR}/x`), memory + 8192, 'the memory state of a standard checkpoint');
      plan.actions[0] = { kind: 'json', file: checkpoint.config, value: { ...vm.manifest.config, machine: w.machine } };
      if (type === 'standard') {
        checkpoint.state = `${SNAPSHOTS_DIR}/${checkpoint.id}/state.vmstate`;
        plan.actions.splice(1, 0, { kind: 'state', file: checkpoint.state });
      }
      if (options.group) plan.group = { id: options.group.id, members: options.group.members, decision: null, coordinated: true };
      tx = await Transaction.begin(vm, plan, command);
      const run = new LiveCheckpointRun(w, tx, plan, checkpoint, agent, fallback, w.state === 'Running');
      // The children are made while the guest runs. A child records its parent's identity, which a
      // VHDX leaf changes at its session's first write: a leaf whose identity moved meanwhile gets
      // its child made again once the guest is stopped.
      run.identities = w.disks.leafIdentities();
      await tx.prepare();
      return run;
    } catch (e) {
      if (tx && !tx.committed) await tx.rollback().catch(() => undefined);
      await agent?.close().catch(() => undefined);
      throw e;
    }
  }

  private lap(name: string): void {
    const t = performance.now();
    this.phases[name] = t - (this.mark || this.pausedAt);
    this.mark = t;
  }

  /** Production: the guest's file systems frozen through its agent (its vCPUs still run). */
  async freeze(): Promise<void> {
    if (!this.agent || this.frozen !== null) return;
    this.frozenAt = performance.now();
    this.frozen = await this.agent.fsfreezeFreeze({ timeoutMs: 60_000 });
  }

  /** The guest stopped, its writes durable, the memory state saved (standard): ready to commit. */
  async pause(): Promise<void> {
    const { w, tx } = this;
    this.pausedAt = performance.now();
    if (this.running) await w.qemu.qmp.execute('stop');
    this.lap('stop');
    await w.disks.flush();
    this.lap('flush');
    testPoint(tx.record.group ? 'live-group:member-paused' : 'live-checkpoint:paused');
    await remakeStaleChildren(w, this.plan.actions, this.identities);
    this.lap('children');
    if (this.checkpoint.state) this.stateBytes = (await saveState(w.qemu.qmp, w.vm.path(this.checkpoint.state))).bytes;
    this.lap('state');
  }

  /** Before the commit: the transaction rolled back, the guest resumed on its old leaves, thawed. */
  async abort(): Promise<void> {
    const { w, tx } = this;
    if (!tx.committed) await tx.rollback().catch(() => undefined);
    if (this.running && this.pausedAt > 0 && !w.qemu.exit) await w.qemu.qmp.execute('cont').catch(() => undefined);
    if (this.frozen !== null) await this.agent!.fsfreezeThaw({ timeoutMs: 60_000 }).catch(() => undefined);
    await this.close();
  }

  /** vm.json committed, the exports switched to the new children, the guest resumed and thawed. */
  async commit(): Promise<LiveCheckpointResult> {
    const { w, tx } = this;
    if (tx.record.group) this.lap('decision');
    try {
      await tx.commit();
    } catch (e) {
      if (tx.committed || !tx.record.group) {
        if (!tx.committed) await this.abort();
        else await this.close();
        throw e;
      }
      // A group decided to commit: never rolled back here. The VM ends; its record stays, and
      // recovery commits it at the next start.
      await this.close();
      await w.end('Off', `the group checkpoint decided to commit but committing here failed, the VM was turned off (the next start finishes it): ${e instanceof Error ? e.message : String(e)}`);
      throw e;
    }
    this.lap('commit');
    try {
      await w.disks.switchToNow();
    } catch (e) {
      // Never let the guest write a layer a checkpoint froze.
      await this.close();
      await w.end('Off', `switching to the new checkpoint's layers failed, the VM was turned off: ${e instanceof Error ? e.message : String(e)}`);
      throw e;
    }
    this.lap('switch');
    if (this.running) await w.qemu.qmp.execute('cont');
    this.lap('cont');
    const pauseMs = this.running ? performance.now() - this.pausedAt : 0;
    let frozenMs: number | null = null;
    try {
      if (this.frozen !== null) {
        await this.agent!.fsfreezeThaw({ timeoutMs: 60_000 });
        frozenMs = performance.now() - this.frozenAt;
      }
    } finally {
      await this.close();
    }
    await tx.finish();
    return { checkpoint: checkpointInfo(w.vm.manifest, this.checkpoint), pauseMs, frozen: this.frozen, frozenMs, stateBytes: this.stateBytes, fallback: this.fallback, phases: this.phases };
  }

  private async close(): Promise<void> {
    await this.agent?.close().catch(() => undefined);
  }
}

export async function liveCheckpoint(w: WorkerInternals, options: LiveCheckpointOptions = {}): Promise<LiveCheckpointResult> {
  const run = await LiveCheckpointRun.begin(w, options);
  try {
    await run.freeze();
    await run.pause();
  } catch (e) {
    await run.abort();
    throw e;
  }
  return run.commit();
}

/** Makes again each child whose parent leaf's identity changed since `before` (the guest is stopped now). */
async function remakeStaleChildren(w: WorkerInternals, actions: Action[], before: Map<string, LinkIdentity>): Promise<void> {
  const now = w.disks.leafIdentities();
  const m = w.vm.manifest;
  for (const [diskId, identity] of now) {
    if (sameIdentity(identity, before.get(diskId)!)) continue;
    const leafFile = m.nodes.find((n) => n.id === m.now.disks[diskId])!.file;
    const action = actions.find((a): a is Extract<Action, { kind: 'child' }> => a.kind === 'child' && a.parent === leafFile)!;
    const file = w.vm.path(action.file);
    await rm(file, { force: true });
    await (await createChild(file, await w.vm.realPath(leafFile))).close();
    await syncFolder(dirname(file));
  }
}

export async function liveApply(w: WorkerInternals, ref: string, options: { checkpointFirst?: boolean | string } = {}): Promise<LiveApplyResult> {
  if (!['Running', 'Paused', 'Paused-Critical'].includes(w.state)) throw new DiskchainError('VM_STATE', `the VM is ${w.state}`, { state: w.state });
  const target = resolveCheckpoint(w.vm.manifest, ref);
  // "Create checkpoint and apply" of a running VM: a live checkpoint of Now first, as the setting says.
  const first = options.checkpointFirst ? await liveCheckpoint(w, typeof options.checkpointFirst === 'string' ? { name: options.checkpointFirst } : {}) : null;
  let result: ApplyResult | undefined;
  await w.restart(async () => {
    result = await applyCheckpoint(w.vm, w.vm.manifest.checkpoints.find((c) => c.id === target.id)!, { command: 'checkpoint apply (running)' });
    const c = w.vm.manifest.checkpoints.find((x) => x.id === target.id)!;
    if (c.state === null) return undefined;
    await savedStateFromCheckpoint(w.vm, c, w.vm.manifest.config.machine ?? w.machine);
    const saved = await readSavedState(w.vm.realFolder, w.vm.manifest);
    if (saved.status !== 'valid') throw new DiskchainError('IO', `the checkpoint's state could not be made Now's saved state: ${saved.status === 'stale' ? saved.reason : 'missing'}`);
    return saved;
  });
  return { ...result!, checkpointFirst: first, state: target.state === null ? 'Off' : 'Running' };
}
