import cliProgress from 'cli-progress';
import { isDiskchainError, type ErrorCode } from '../io/errors.js';
import type { ProgressCallback } from '../ops/progress.js';

/** Runs a command's action: its result is the exit code; an error is reported and mapped to one. */
export type Run = (action: () => Promise<number>, json: boolean) => Promise<void>;

/** Exit codes, stable and documented in --help (EXIT_CODES_HELP) and the README. */
export const EXIT = {
  ok: 0,
  findings: 1, // check found problems
  usage: 2,
  badInput: 3, // corrupt, truncated, unsupported or unknown format
  chain: 4, // parent missing, mismatched, cycle; a file locked by another process or a pending merge
  io: 5, // operating system error, no space
  notFound: 6, // no such VM or checkpoint, an ambiguous name, a target that exists
  hypervisor: 7, // QEMU failed, its QMP or guest agent refused or closed, or did not answer in time
  internal: 70, // a bug: an error nobody expected (EX_SOFTWARE)
  aborted: 130,
  closedPipe: 141, // stdout or stderr closed by its reader (| head): stop quietly, as a process killed by SIGPIPE
} as const;

export const EXIT_CODES_HELP = `
Exit codes:
  0    success (check: no errors or warnings)
  1    check found errors or warnings
  2    usage error: a bad or contradictory option or argument, an option that does not apply,
       a folder where a disk file is expected, an offset or length outside the disk
  3    the input is corrupt, truncated, unsupported or not a disk image, or a VM's vm.json
       is damaged or disagrees with its files (MANIFEST_INVALID)
  4    the chain is broken, or the operation would break it: parent not found, identity
       mismatch, cycle, too deep, path outside the allowed folders, another disk depends on
       a file the operation changes, a merge journal that no longer fits the chain;
       or a file is locked: another diskchain or a QEMU uses it (the message names the
       process), or a pending merge reserves it (the message says what to run); or
       another operation holds the VM (VM_BUSY), or the VM is not in a state the
       operation can run in: running, off, saved, paused (VM_STATE)
  5    I/O error or no space left
  6    no such VM or checkpoint, or a checkpoint name that matches several (NOT_FOUND,
       CHECKPOINT_NOT_FOUND, AMBIGUOUS), or the target already exists (EXISTS)
  7    QEMU failed to start or exited (QEMU_FAILED), QEMU or its guest agent refused a
       command (QMP_ERROR), its connection closed (QMP_CLOSED), or it did not answer in
       time (TIMEOUT)
  70   internal error (a bug; DISKCHAIN_DEBUG=1 prints the stack)
  130  cancelled (Ctrl-C)
  141  the output was closed early (e.g. piped into head): the command stops quietly`;

/** The exit code of an error code (every code has one; EXIT_CODES_HELP documents them). */
export function exitCodeFor(code: ErrorCode): number {
  switch (code) {
    case 'INVALID_ARGUMENT':
    case 'OUT_OF_RANGE':
    case 'READ_ONLY':
    case 'FORBIDDEN':
      return EXIT.usage;
    case 'PARENT_NOT_FOUND':
    case 'PARENT_MISMATCH':
    case 'CHAIN_CYCLE':
    case 'CHAIN_TOO_DEEP':
    case 'PATH_NOT_ALLOWED':
    case 'HAS_DEPENDENTS':
    case 'JOURNAL_MISMATCH':
    case 'LOCKED':
    case 'VM_BUSY':
    case 'VM_STATE':
      return EXIT.chain;
    case 'IO':
    case 'NO_SPACE':
      return EXIT.io;
    case 'NOT_FOUND':
    case 'CHECKPOINT_NOT_FOUND':
    case 'AMBIGUOUS':
    case 'EXISTS':
      return EXIT.notFound;
    case 'QEMU_FAILED':
    case 'QMP_ERROR':
    case 'QMP_CLOSED':
    case 'TIMEOUT':
      return EXIT.hypervisor;
    case 'ABORTED':
      return EXIT.aborted;
    case 'CORRUPT':
    case 'TRUNCATED':
    case 'UNSUPPORTED':
    case 'UNKNOWN_FORMAT':
    case 'MANIFEST_INVALID':
      return EXIT.badInput;
  }
}

/** Prints an error (as JSON with --json) and returns the exit code. */
export function reportError(e: unknown, json: boolean): number {
  if (isDiskchainError(e)) {
    if (json) process.stdout.write(JSON.stringify({ error: e.toJSON() }, null, 2) + '\n');
    else process.stderr.write(`diskchain: ${e.code}: ${e.message}\n`);
    return exitCodeFor(e.code);
  }
  const err = e as NodeJS.ErrnoException;
  // An operating-system error that escaped a typed one: one line, as an I/O error.
  if (typeof err?.code === 'string' && typeof err.syscall === 'string') {
    if (json) process.stdout.write(JSON.stringify({ error: { name: 'Error', code: 'IO', errno: err.code, message: err.message } }, null, 2) + '\n');
    else process.stderr.write(`diskchain: IO: ${err.message}\n`);
    return EXIT.io;
  }
  const message = String(err?.message ?? e).split('\n')[0];
  process.stderr.write(`diskchain: internal error: ${process.env.DISKCHAIN_DEBUG ? (err?.stack ?? message) : `${message} (DISKCHAIN_DEBUG=1 prints the stack)`}\n`);
  return EXIT.internal;
}

let quiet = false;

/** -q/--quiet: no progress bars and no confirmation lines; errors, --json and the data a command is asked for still print. */
export function setQuiet(value: boolean): void {
  quiet = value;
}

/** A confirmation line ("created ...", "merged ..."): printed unless --quiet. */
export function say(text: string): void {
  if (!quiet) process.stdout.write(text.endsWith('\n') ? text : text + '\n');
}

/** A warning on stderr, unless --quiet. */
export function warn(text: string): void {
  if (!quiet) process.stderr.write(`diskchain: warning: ${text}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
}

/** A progress bar on stderr when it is a terminal (and not --quiet); nothing otherwise. It draws no colour. */
export function progressBar(label: string): { onProgress: ProgressCallback; stop: () => void } {
  if (!process.stderr.isTTY || quiet) return { onProgress: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    { format: `${label} [{bar}] {percentage}% | {doneMiB}/{totalMiB} MiB | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    onProgress: (done, total) => {
      const payload = { doneMiB: (done / 2 ** 20).toFixed(0), totalMiB: (total / 2 ** 20).toFixed(0) };
      if (!started) {
        bar.start(total, done, payload);
        started = true;
      } else bar.update(done, payload);
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

/** An AbortSignal fired by Ctrl-C, so long operations stop cleanly. */
export function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  return controller.signal;
}
