/**
 * One running qemu-system process and its QMP connection.
 *
 *   spawn ──> QMP socket accepts ──> greeting + qmp_capabilities ──> running
 *     │              │ (QEMU exits first: QEMU_FAILED with its stderr)
 *     └──────────────┴──> exited (any time: `exited` settles, `qmp` closes)
 *
 * stop() asks nicely and then insists: `quit` over QMP (QEMU closes its images and exits), then
 * SIGKILL after a timeout. powerdown() presses the ACPI power button and waits for the guest to
 * turn itself off. QEMU's stderr is kept (the last 64 KiB) for error messages.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { DiskchainError } from '../io/errors.js';
import { qemuArgv, type QemuConfig } from './qemu-command.js';
import { QmpClient } from './qmp.js';

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface QemuStartOptions {
  /** Bounds the start until QMP answers (default 30 s). */
  timeoutMs?: number;
  /**
   * A command QEMU is run through, which execs it (same pid): the VM worker uses
   * `setpriv --pdeathsig KILL` so QEMU dies with the process that serves its disks.
   */
  wrapper?: string[];
  signal?: AbortSignal;
}

const STDERR_KEPT = 64 * 1024;

export class QemuProcess {
  /** Settles when the process has exited, however it ended. */
  readonly exited: Promise<QemuExit>;
  private exitStatus: QemuExit | undefined;
  private stderr = '';
  private qmpConnection: QmpClient | undefined;

  private constructor(
    private readonly child: ChildProcess,
    readonly argv: string[],
  ) {
    // 'close' rather than 'exit': it comes after stderr has been read to its end.
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.exitStatus = { code, signal };
        resolve(this.exitStatus);
      });
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-STDERR_KEPT);
    });
  }

  /** Starts QEMU and connects to its QMP socket. A stale socket file at that path is removed first. */
  static async start(config: QemuConfig, options: QemuStartOptions = {}): Promise<QemuProcess> {
    const argv = qemuArgv(config);
    const binary = config.binary ?? 'qemu-system-x86_64';
    await rm(config.qmpSocket, { force: true });
    const wrapper = options.wrapper ?? [];
    const child = wrapper.length > 0 ? spawn(wrapper[0]!, [...wrapper.slice(1), binary, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] }) : spawn(binary, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    const qemu = new QemuProcess(child, argv);
    const spawned = await new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', (e) => resolve(e));
    });
    if (spawned) throw new DiskchainError('QEMU_FAILED', `cannot run ${binary}: ${spawned.message}`, { binary }, { cause: spawned });
    try {
      qemu.qmpConnection = await qemu.connectQmp(config.qmpSocket, options);
      return qemu;
    } catch (e) {
      const exitedByItself = qemu.exitStatus !== undefined;
      await qemu.kill();
      throw exitedByItself ? qemu.failure('QEMU exited while starting') : e;
    }
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** The QMP connection (closed once QEMU has exited). */
  get qmp(): QmpClient {
    return this.qmpConnection!;
  }

  /** The exit status, or undefined while QEMU runs. */
  get exit(): QemuExit | undefined {
    return this.exitStatus;
  }

  /** The last 64 KiB QEMU wrote to stderr. */
  get stderrTail(): string {
    return this.stderr;
  }

  /**
   * Ends QEMU: `quit` over QMP, then SIGKILL when it has not exited after `timeoutMs` (default 10 s).
   * Resolves with how it ended.
   */
  async stop(timeoutMs = 10_000): Promise<QemuExit> {
    if (this.exitStatus) return this.exitStatus;
    const qmp = this.qmpConnection;
    if (qmp && !qmp.isClosed) await qmp.execute('quit', undefined, { timeoutMs }).catch(() => undefined);
    return this.waitOrKill(timeoutMs);
  }

  /**
   * Presses the ACPI power button and waits up to `timeoutMs` (default 30 s) for the guest to power
   * off. Resolves with true when it did; false when QEMU had to be killed.
   */
  async powerdown(timeoutMs = 30_000): Promise<boolean> {
    if (this.exitStatus) return true;
    await this.qmp.execute('system_powerdown', undefined, { timeoutMs });
    const ended = await this.exitWithin(timeoutMs);
    if (!ended) await this.kill();
    return ended;
  }

  /** SIGKILL, then wait for the exit. */
  async kill(): Promise<QemuExit> {
    if (!this.exitStatus) this.child.kill('SIGKILL');
    const status = await this.exited;
    await this.qmpConnection?.close();
    return status;
  }

  /** A QEMU_FAILED error carrying the exit status and QEMU's own words. */
  failure(message: string): DiskchainError {
    const lines = this.stderr.trim().split('\n').slice(-10).join('\n');
    return new DiskchainError('QEMU_FAILED', lines ? `${message}: ${lines}` : message, { pid: this.child.pid, exit: this.exitStatus, stderr: this.stderr.slice(-4096) });
  }

  /** Waits up to `timeoutMs` for the exit; kill() then ends it if it is still there (and closes QMP either way). */
  private async waitOrKill(timeoutMs: number): Promise<QemuExit> {
    await this.exitWithin(timeoutMs);
    return this.kill();
  }

  /** Resolves with true once QEMU has exited, or false after `timeoutMs` (the timer does not outlive the wait). */
  exitWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    return Promise.race([this.exited.then(() => true), timeout]).finally(() => clearTimeout(timer));
  }

  /** Tries the socket every 20 ms until QMP answers, QEMU exits, or the time is up. */
  private async connectQmp(path: string, options: QemuStartOptions): Promise<QmpClient> {
    const timeoutMs = options.timeoutMs ?? 30_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (options.signal?.aborted) throw new DiskchainError('ABORTED', 'QEMU start cancelled');
      if (this.exitStatus) throw this.failure('QEMU exited while starting');
      try {
        return await QmpClient.connect(path, { timeoutMs: Math.max(1, deadline - Date.now()), signal: options.signal });
      } catch (e) {
        if (!(e instanceof DiskchainError && e.code === 'QMP_CLOSED')) throw e;
      }
      if (Date.now() >= deadline) throw new DiskchainError('TIMEOUT', `QEMU did not open its QMP socket within ${timeoutMs} ms`, { file: path, timeoutMs });
      await sleep(20);
    }
  }
}
