/**
 * The worker: the one process that owns a running VM, as Hyper-V has one worker process per VM. It
 * holds the VM's lock, serves Now's disks to QEMU over NBD (served-disks.ts), runs QEMU, answers the
 * control socket (control.ts) and records its state in run/worker.json (run-record.ts).
 *
 *            start                       pause                      resume
 *   (Off) ─────────► Starting ─► Running ────────► Paused ──────────────► Running
 *   (Saved) ─ -incoming ─┘          │  ▲  ENOSPC (BLOCK_IO_ERROR nospace)
 *                                   │  └───────── Paused-Critical ◄──┘ resume once space is freed
 *                                   ├─ stop ─► Stopping ─► Off      (ACPI button; hard stop after a timeout or with force)
 *                                   ├─ save ─► Saving ──► Saved     (memory and device state in <vm>/Saved/)
 *                                   └─ QEMU exits by itself ─► Off  (the guest powered off; or QEMU died: the reason kept)
 *
 * Operations run one at a time (`busy` names the one running); `status` answers at any time.
 * Checkpoints and apply of a running VM are in live-checkpoint.ts. When the worker ends, however it
 * ends, the disks are flushed and closed before the lock is released; if the worker is killed, QEMU
 * dies with it (setpriv --pdeathsig) and the disks are as the engine's crash rules leave them.
 */
import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { DiskchainError, isDiskchainError } from '../io/errors.js';
import { freeBytes } from '../ops/space.js';
import type { VmFolder } from '../checkpoint/folder.js';
import { discardSavedState, readSavedState, saveNowState, type SavedStateStatus } from '../checkpoint/saved-state.js';
import { openVmFolder } from '../checkpoint/vms.js';
import { createCheckpoint } from '../checkpoint/create.js';
import { removeCheckpoint } from '../checkpoint/remove.js';
import { resolveAccel } from '../vm/qemu-command.js';
import { QemuProcess, type QemuExit } from '../vm/qemu-process.js';
import type { BlockIoErrorData, QmpEvent } from '../vm/qmp-schema.js';
import { loadState, saveState } from '../vm/state-file.js';
import { ControlServer, type ControlPeer } from './control.js';
import { qemuConfigFor } from './qemu-config.js';
import { readRunRecord, runPath, writeRunRecord, type VmState } from './run-record.js';
import { ServedDisks } from './served-disks.js';

export interface VmStatus {
  folder: string;
  id: string;
  name: string;
  state: VmState;
  /** Why the VM is in this state, when not the usual way (QEMU died, no space left, a hard stop). */
  reason: string | null;
  workerPid: number | null;
  qemuPid: number | null;
  /** When the worker started the VM (ISO time), and for how long it has run. */
  started: string | null;
  uptimeMs: number | null;
  accel: 'kvm' | 'tcg' | null;
  machine: string | null;
  /** The operation the worker is running (checkpoint, save, ...). */
  busy: string | null;
  /** Paused-Critical: the disk write QEMU could not complete. */
  critical: { device: string; operation: string; reason: string } | null;
  warnings: string[];
  /** The VM folder's file system has less free than config.freeSpaceReserveBytes (bytes): the guest pauses (Paused-Critical) when it is full. */
  lowSpace: { free: number; reserve: number } | null;
  /** A saved state Now resumes from at the next start. */
  saved: { created: string; checkpoint: string | null } | null;
  /** A run/ left by a worker that died: what it said. */
  stale: string | null;
}

export interface VmWorkerOptions {
  qemuBinary?: string;
  /** QEMU start until QMP answers (default 60 s). */
  startTimeoutMs?: number;
  /** Connection-level messages of the NBD server, and the worker's own notes. */
  log?: (message: string) => void;
}

export interface StopOptions {
  /** Hard stop at once (Hyper-V's Turn Off) instead of the ACPI power button. */
  force?: boolean;
  /** How long the guest has to power off before the hard stop (default 60 s). */
  timeoutMs?: number;
}

/** The worker's view of the guest that live operations (live-checkpoint.ts) use. */
export interface WorkerInternals {
  readonly vm: VmFolder;
  readonly disks: ServedDisks;
  readonly qemu: QemuProcess;
  readonly machine: string;
  readonly agentSocket: string | undefined;
  readonly state: VmState;
  setState(state: VmState, reason?: string | null): void;
  /**
   * Apply of a running VM: QEMU ends and the disks are closed, `offline` changes the VM folder, then
   * the disks are served again and a new QEMU resumes the saved state `offline` returns; none: the
   * VM ends Off.
   */
  restart(offline: () => Promise<ValidSavedState | undefined>): Promise<void>;
  /** Ends the run: QEMU (already stopped or killed here), disks, lock. */
  end(state: 'Off' | 'Saved', reason: string | null): Promise<void>;
  warn(message: string): void;
  /** The operation running (or holding the turn), or null. */
  readonly operation: string | null;
  /** Runs an operation when the previous one has finished (`busy` names it meanwhile). */
  exclusive<T>(name: string, fn: () => Promise<T>): Promise<T>;
}

export type ValidSavedState = SavedStateStatus & { status: 'valid' };

export type LiveOperation = (worker: WorkerInternals, args: Record<string, unknown>, peer: ControlPeer) => Promise<unknown>;

/** setpriv (util-linux) execs QEMU with a parent-death signal: QEMU does not outlive its worker. */
function deathWrapper(): string[] {
  for (const p of ['/usr/bin/setpriv', '/bin/setpriv']) if (existsSync(p)) return [p, '--pdeathsig', 'KILL'];
  return [];
}

const DEFAULT_RESERVE = 1024 ** 3;

export class VmWorker implements WorkerInternals {
  private currentState: VmState = 'Starting';
  private stateReason: string | null = null;
  private qemuProcess: QemuProcess | undefined;
  private machineName = 'pc';
  private accel: 'kvm' | 'tcg' | null = null;
  private busy: string | null = null;
  private critical: VmStatus['critical'] = null;
  private readonly warnings: string[] = [];
  private lowSpace: VmStatus['lowSpace'] = null;
  private automaticCheckpoint: string | null = null;
  private readonly reserveTimer = setInterval(() => void this.checkReserve(), 5000).unref();
  private queue: Promise<unknown> = Promise.resolve();
  private control: ControlServer | undefined;
  private recordWrites: Promise<void> = Promise.resolve();
  private ending: Promise<void> | undefined;
  private guestShutdown = false;
  private resolveEnded!: (status: VmStatus) => void;
  private readonly liveOps = new Map<string, { fn: LiveOperation; exclusive: boolean }>();
  readonly started = new Date();
  /** Settles once the VM is off or saved and everything is closed (the lock released). */
  readonly ended: Promise<VmStatus>;

  private constructor(
    readonly vm: VmFolder,
    private served: ServedDisks,
    private readonly options: VmWorkerOptions,
  ) {
    this.ended = new Promise((resolve) => (this.resolveEnded = resolve));
  }

  /**
   * Starts the VM: takes its lock (VM_BUSY when another process holds it), settles an interrupted
   * operation, serves the disks, starts QEMU (resuming a saved state when there is a valid one) and
   * listens on the control socket. Resolves once the guest runs.
   */
  static async start(folder: string, options: VmWorkerOptions = {}): Promise<VmWorker> {
    const { vm } = await openVmFolder(folder, { command: 'vm worker' });
    let disks: ServedDisks | undefined;
    let worker: VmWorker | undefined;
    try {
      await vm.ensureLayout();
      const previous = await readRunRecord(vm.realFolder);
      const stale = previous && previous.state !== 'Off' && previous.state !== 'Saved' ? `the previous worker (pid ${previous.pid}) ended while ${previous.state}` : null;
      const saved = await readSavedState(vm.realFolder, vm.manifest);
      for (const name of ['qmp', 'agent', 'nbd', 'control'] as const) await rm(runPath(vm.realFolder, name), { force: true });
      // Hyper-V's automatic checkpoint: taken at a start from Off (a resume from Saved is not a start).
      const automatic = vm.manifest.config.automaticCheckpoints && saved.status !== 'valid' ? await createCheckpoint(vm, { name: `Automatic Checkpoint - ${vm.manifest.name} - (${new Date().toISOString().slice(0, 19).replace('T', ' ')})`, command: 'vm start (automatic checkpoint)' }) : undefined;
      disks = await ServedDisks.open(vm, runPath(vm.realFolder, 'nbd'), options.log);
      worker = new VmWorker(vm, disks, options);
      worker.automaticCheckpoint = automatic?.id ?? previous?.automaticCheckpoint ?? null;
      if (stale) worker.warn(`${stale}; its run/ was stale`);
      if (saved.status === 'stale') {
        worker.warn(`the saved state was not resumed: ${saved.reason}; the VM boots`);
        await discardSavedState(vm);
      }
      worker.writeRecord();
      worker.control = await ControlServer.listen(runPath(vm.realFolder, 'control'), (op, args, peer) => worker!.handle(op, args, peer));
      await worker.launch(saved.status === 'valid' ? saved : undefined);
      worker.setState('Running');
      await worker.checkReserve();
      await worker.recordWritten();
      return worker;
    } catch (e) {
      if (worker) {
        await worker.end('Off', `the start failed: ${e instanceof Error ? e.message : String(e)}`).catch(() => undefined);
        await worker.closeControl();
      } else {
        await disks?.close().catch(() => undefined);
        await vm.close();
      }
      throw e;
    }
  }

  get disks(): ServedDisks {
    return this.served;
  }
  get state(): VmState {
    return this.currentState;
  }
  get qemu(): QemuProcess {
    if (!this.qemuProcess) throw new DiskchainError('VM_STATE', 'QEMU is not running', { state: this.currentState });
    return this.qemuProcess;
  }
  get machine(): string {
    return this.machineName;
  }
  get agentSocket(): string | undefined {
    return this.vm.manifest.config.guestAgent === false ? undefined : runPath(this.vm.realFolder, 'agent');
  }

  /**
   * Adds an operation the control socket accepts (live-checkpoint.ts registers checkpoint and apply),
   * run exclusively; `exclusive: false` for one that takes the turn itself (a group checkpoint's steps)
   * or answers at once (a removal's progress and cancel).
   */
  register(op: string, fn: LiveOperation, options: { exclusive?: boolean } = {}): void {
    this.liveOps.set(op, { fn, exclusive: options.exclusive ?? true });
  }

  status(): VmStatus {
    const m = this.vm.manifest;
    const live = this.qemuProcess !== undefined && !this.qemuProcess.exit;
    return {
      folder: this.vm.folder,
      id: m.id,
      name: m.name,
      state: this.currentState,
      reason: this.stateReason,
      workerPid: process.pid,
      qemuPid: live ? this.qemuProcess!.pid : null,
      started: this.started.toISOString(),
      uptimeMs: Date.now() - this.started.getTime(),
      accel: this.accel,
      machine: this.machineName,
      busy: this.busy,
      critical: this.critical,
      warnings: [...this.warnings],
      lowSpace: this.lowSpace,
      saved: null,
      stale: null,
    };
  }

  pause(): Promise<VmStatus> {
    return this.exclusive('pause', async () => {
      this.require(['Running']);
      await this.qemu.qmp.execute('stop');
      this.setState('Paused');
      return { ...this.status(), busy: null };
    });
  }

  /** Resumes a paused VM; from Paused-Critical, QEMU retries the write that failed (and pauses again if space is still short). */
  resume(): Promise<VmStatus> {
    return this.exclusive('resume', async () => {
      this.require(['Paused', 'Paused-Critical']);
      this.critical = null;
      await this.qemu.qmp.execute('cont');
      // Still full: the next write fails at once; QEMU reports BLOCK_IO_ERROR (onEvent sets critical)
      // before cont's answer is read and its STOP after it: the VM stays Paused-Critical.
      if (this.critical === null) this.setState('Running');
      return { ...this.status(), busy: null };
    });
  }

  /** Shut down: the ACPI power button, then a hard stop after `timeoutMs`; `force`: a hard stop at once. */
  stop(options: StopOptions = {}): Promise<VmStatus> {
    return this.exclusive('stop', async () => {
      this.require(['Running', 'Paused', 'Paused-Critical']);
      const qemu = this.qemu;
      const was = this.currentState;
      this.setState('Stopping');
      let reason: string | null = null;
      this.expectExit(qemu);
      if (options.force || was === 'Paused-Critical') {
        await qemu.kill();
        reason = options.force ? 'turned off (hard stop)' : 'turned off while Paused-Critical';
      } else {
        if (was === 'Paused') await qemu.qmp.execute('cont');
        const timeoutMs = options.timeoutMs ?? 60_000;
        const clean = await qemu.powerdown(timeoutMs).catch(async () => {
          await qemu.kill();
          return false;
        });
        if (!clean) reason = `the guest did not shut down within ${timeoutMs} ms: turned off (hard stop)`;
      }
      await this.end('Off', reason);
      return this.finalStatus();
    });
  }

  /** Save: memory and device state into <vm>/Saved/, QEMU ends, the VM is Saved; the next start resumes it. */
  save(): Promise<VmStatus> {
    return this.exclusive('save', async () => {
      this.require(['Running', 'Paused']);
      const qemu = this.qemu;
      const was = this.currentState;
      this.setState('Saving');
      try {
        await qemu.qmp.execute('stop');
        await this.disks.flush();
        await saveNowState(this.vm, this.machineName, (file) => saveState(qemu.qmp, file));
      } catch (e) {
        await discardSavedState(this.vm).catch(() => undefined);
        if (!qemu.exit) {
          if (was === 'Running') await qemu.qmp.execute('cont').catch(() => undefined);
          this.setState(was);
        }
        throw e;
      }
      this.expectExit(qemu);
      await qemu.stop(10_000);
      await this.end('Saved', null);
      return this.finalStatus();
    });
  }

  /** Answers a control request. */
  handle(op: string, args: Record<string, unknown>, peer: ControlPeer): Promise<unknown> {
    switch (op) {
      case 'status':
        return Promise.resolve(this.status());
      case 'pause':
        return this.pause();
      case 'resume':
        return this.resume();
      case 'stop':
        return this.stop({ force: args.force === true, ...(typeof args.timeoutMs === 'number' ? { timeoutMs: args.timeoutMs } : {}) });
      case 'save':
        return this.save();
    }
    const live = this.liveOps.get(op);
    if (live) return live.exclusive ? this.exclusive(op, () => live.fn(this, args, peer)) : live.fn(this, args, peer);
    return Promise.reject(new DiskchainError('INVALID_ARGUMENT', `the worker knows no operation "${op}"`, { op }));
  }

  get operation(): string | null {
    return this.busy;
  }

  /** Runs an operation when the previous one has finished. */
  exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.ending) throw new DiskchainError('VM_STATE', `the VM is ${this.currentState === 'Saved' ? 'saved' : 'off'}: nothing to ${name}`, { state: this.currentState });
      this.busy = name;
      try {
        return await fn();
      } finally {
        this.busy = null;
      }
    };
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  setState(state: VmState, reason: string | null = null): void {
    this.currentState = state;
    this.stateReason = reason;
    this.writeRecord();
  }

  warn(message: string): void {
    if (!this.warnings.includes(message)) this.warnings.push(message);
    this.options.log?.(`warning: ${message}`);
  }

  async restart(offline: () => Promise<ValidSavedState | undefined>): Promise<void> {
    const old = this.qemuProcess;
    if (old && !old.exit) {
      this.expectExit(old);
      await old.qmp.execute('stop').catch(() => undefined);
      await old.stop(10_000);
    }
    this.setState('Starting', 'applying a checkpoint');
    await this.served.close();
    let saved: ValidSavedState | undefined;
    try {
      saved = await offline();
    } catch (e) {
      await this.end('Off', `applying a checkpoint failed: ${e instanceof Error ? e.message : String(e)}`);
      throw e;
    }
    if (!saved) {
      await this.end('Off', null);
      return;
    }
    try {
      this.served = await ServedDisks.open(this.vm, runPath(this.vm.realFolder, 'nbd'), this.options.log);
      await this.launch(saved);
    } catch (e) {
      await this.end('Off', `the VM could not be resumed at the checkpoint: ${e instanceof Error ? e.message : String(e)}`);
      throw e;
    }
    this.setState('Running');
  }

  /** Ends the run (idempotent): disks flushed and closed, sockets removed, the record written, the lock released. */
  end(state: 'Off' | 'Saved', reason: string | null): Promise<void> {
    this.ending ??= (async () => {
      clearInterval(this.reserveTimer);
      const qemu = this.qemuProcess;
      if (qemu && !qemu.exit) {
        this.expectExit(qemu);
        await qemu.kill();
      }
      let why = reason;
      try {
        await this.disks.close();
      } catch (e) {
        why = `${why ? `${why}; ` : ''}closing the disks failed: ${e instanceof Error ? e.message : String(e)}`;
      }
      for (const name of ['qmp', 'agent', 'nbd'] as const) await rm(runPath(this.vm.realFolder, name), { force: true });
      if (state === 'Off' && why === null) why = await this.removeAutomaticCheckpoint();
      this.currentState = state;
      this.stateReason = why;
      this.writeRecord();
      await this.recordWrites;
      const status = this.finalStatus();
      await this.vm.close();
      this.resolveEnded(status);
      void this.closeControl();
    })();
    return this.ending;
  }

  /** At a clean shutdown the automatic checkpoint of this run goes (its layers merged), as Hyper-V does. */
  private async removeAutomaticCheckpoint(): Promise<string | null> {
    const id = this.automaticCheckpoint;
    const c = id ? this.vm.manifest.checkpoints.find((x) => x.id === id) : undefined;
    if (!c) return null;
    try {
      await removeCheckpoint(this.vm, c, { command: 'vm stop (automatic checkpoint)' });
      this.automaticCheckpoint = null;
      return null;
    } catch (e) {
      return `the automatic checkpoint "${c.name}" could not be removed: ${e instanceof Error ? e.message : String(e)}`;
    }
  }

  /** Resolves once run/worker.json says what the worker last set. */
  recordWritten(): Promise<void> {
    return this.recordWrites;
  }

  /** Closes the control socket (after the answers in flight): the worker process may exit then. */
  async closeControl(): Promise<void> {
    await this.control?.close();
  }

  private finalStatus(): VmStatus {
    return { ...this.status(), qemuPid: null, uptimeMs: null, busy: null };
  }

  private require(states: VmState[]): void {
    if (!states.includes(this.currentState)) {
      throw new DiskchainError('VM_STATE', `the VM is ${this.currentState}; this needs it ${states.join(' or ')}`, { state: this.currentState, needed: states });
    }
  }

  private expected = new WeakSet<QemuProcess>();
  private expectExit(qemu: QemuProcess): void {
    this.expected.add(qemu);
  }

  /** Starts QEMU on the served disks; with a saved state, loads it (-incoming) and resumes the guest. */
  private async launch(saved?: ValidSavedState): Promise<void> {
    const config = qemuConfigFor(this.vm.manifest, this.vm.realFolder, { incoming: saved !== undefined, ...(saved ? { machine: saved.record.machine } : {}), ...(this.options.qemuBinary ? { binary: this.options.qemuBinary } : {}) });
    this.accel = resolveAccel(config);
    this.guestShutdown = false;
    const qemu = await QemuProcess.start(config, { timeoutMs: this.options.startTimeoutMs ?? 60_000, wrapper: deathWrapper() });
    this.qemuProcess = qemu;
    qemu.qmp.onEvent((e) => this.onEvent(e));
    void qemu.exited.then((exit) => {
      if (!this.expected.has(qemu)) void this.onUnexpectedExit(qemu, exit);
    });
    try {
      if (saved) {
        await loadState(qemu.qmp, saved.file);
        // Never resume one state twice: forgotten before the guest runs.
        await discardSavedState(this.vm);
        await qemu.qmp.execute('cont');
        this.machineName = saved.record.machine;
      } else {
        this.machineName = await versionedMachine(qemu, config.machine ?? 'pc');
      }
    } catch (e) {
      this.expectExit(qemu);
      await qemu.kill();
      throw isDiskchainError(e) && e.code === 'QMP_CLOSED' ? qemu.failure('QEMU exited while restoring the saved state') : e;
    }
  }

  private onEvent(e: QmpEvent): void {
    switch (e.event) {
      case 'SHUTDOWN':
        if ((e.data as { guest?: boolean }).guest) this.guestShutdown = true;
        return;
      case 'BLOCK_IO_ERROR': {
        const d = e.data as unknown as BlockIoErrorData;
        if (d.action !== 'stop') return;
        this.critical = { device: d.device || d['node-name'] || '?', operation: d.operation, reason: d.nospace ? 'no space left on the file system that holds the disk' : d.reason };
        this.setState('Paused-Critical', `a ${d.operation} failed: ${this.critical.reason}; free space, then resume`);
        void this.checkReserve(); // the free space the status shows, as of the failure rather than up to 5 s before
        return;
      }
      case 'RESUME':
        if (this.busy === null && this.currentState !== 'Running') {
          this.critical = null;
          this.setState('Running');
        }
        return;
      case 'STOP':
        if (this.busy === null && this.currentState === 'Running') this.setState('Paused', 'paused by QEMU');
        return;
    }
  }

  private async onUnexpectedExit(qemu: QemuProcess, exit: QemuExit): Promise<void> {
    if (this.qemuProcess !== qemu) return;
    const clean = this.guestShutdown && exit.code === 0;
    const reason = clean ? null : qemu.failure(`QEMU exited unexpectedly (${exit.signal ? `signal ${exit.signal}` : `exit status ${exit.code}`})`).message;
    await this.end('Off', reason);
  }

  /**
   * The free-space reserve (config.freeSpaceReserveBytes): `lowSpace` in the status while the VM
   * folder's file system has less free, checked at start and every 5 s.
   */
  async checkReserve(): Promise<void> {
    const reserve = this.vm.manifest.config.freeSpaceReserveBytes ?? DEFAULT_RESERVE;
    const free = await freeBytes(this.vm.path('vm.json')).catch(() => Number.POSITIVE_INFINITY);
    const was = this.lowSpace;
    this.lowSpace = free < reserve ? { free, reserve } : null;
    if (this.lowSpace && !was) this.options.log?.(`warning: the VM folder's file system has ${free} bytes free, less than the reserve of ${reserve} bytes: the guest pauses (Paused-Critical) when it is full`);
  }

  private writeRecord(): void {
    const record = {
      kind: 'diskchain.worker' as const,
      version: 1 as const,
      pid: process.pid,
      qemuPid: this.qemuProcess && !this.qemuProcess.exit ? this.qemuProcess.pid : null,
      started: this.started.toISOString(),
      updated: new Date().toISOString(),
      state: this.currentState,
      reason: this.stateReason,
      automaticCheckpoint: this.automaticCheckpoint,
    };
    this.recordWrites = this.recordWrites.then(() => writeRunRecord(this.vm.realFolder, record)).catch((e: unknown) => this.options.log?.(`cannot write the run record: ${String(e)}`));
  }
}

/** The versioned name of a machine alias ("pc" → "pc-i440fx-7.2"): a saved state records it. */
async function versionedMachine(qemu: QemuProcess, machine: string): Promise<string> {
  const list = (await qemu.qmp.executeUntyped('query-machines')) as Array<{ name: string; alias?: string }>;
  return list.find((x) => x.alias === machine)?.name ?? machine;
}
